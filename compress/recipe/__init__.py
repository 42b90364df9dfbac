"""The recipe: its schema (pydantic models whose fields are the YAML keys), the rules between its
parts, and loading with key paths. ``compress.recipe.doc`` generates docs/recipe.md from it."""

from compress.recipe.schema import (
    SPLIT_ROLES,
    BaselineConfig,
    CheckpointConfig,
    DataConfig,
    DriftConfig,
    EvaluateConfig,
    GateConfig,
    ModelConfig,
    ProfileConfig,
    Recipe,
    ReportConfig,
    SplitConfig,
    StepEntry,
    TargetConfig,
    TrainConfig,
    TransformConfig,
    VariantConfig,
    format_validation_error,
    load_recipe,
    parse_recipe,
    recipe_json_schema,
)

__all__ = [
    "SPLIT_ROLES", "BaselineConfig", "CheckpointConfig", "DataConfig", "DriftConfig",
    "EvaluateConfig", "GateConfig", "ModelConfig", "ProfileConfig", "Recipe", "ReportConfig",
    "SplitConfig", "StepEntry", "TargetConfig", "TrainConfig", "TransformConfig", "VariantConfig",
    "format_validation_error", "load_recipe", "parse_recipe", "recipe_json_schema",
]
