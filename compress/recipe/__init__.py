"""The recipe: its schema (pydantic models whose fields are the YAML keys), the rules between its
parts (generic loops over the plug-ins' declarations, ``rules``), and loading with key paths
(``load``). Variants, chains of registered steps, are in ``variants``.
``compress.recipe.doc`` generates docs/recipe.md from it."""

from compress.recipe.load import (
    check_files,
    format_validation_error,
    load_recipe,
    parse_recipe,
    recipe_json_schema,
)
from compress.recipe.rules import check_rules
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
    TrainConfig,
    TransformConfig,
)
from compress.recipe.variants import StepEntry, VariantConfig
from compress.runtimes.target import TargetConfig  # lives with the runtimes; here for compatibility

__all__ = [
    "SPLIT_ROLES", "BaselineConfig", "CheckpointConfig", "DataConfig", "DriftConfig",
    "EvaluateConfig", "GateConfig", "ModelConfig", "ProfileConfig", "Recipe", "ReportConfig",
    "SplitConfig", "StepEntry", "TargetConfig", "TrainConfig", "TransformConfig", "VariantConfig",
    "check_files", "check_rules", "format_validation_error", "load_recipe", "parse_recipe",
    "recipe_json_schema",
]
