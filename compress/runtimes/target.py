"""Where a variant runs: ``targets[]`` of a recipe. The runtime named by a target declares its
devices and the typed model of its ``options`` (compress/runtimes/base.py)."""

from __future__ import annotations

from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_serializer,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from compress.runtimes.base import RUNTIMES, RuntimeOptions, option_problems


class TargetConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    runtime: str
    device: str = Field(
        "cpu", description="One of the runtime's devices (see Runtimes below): cpu; cuda (NVIDIA, "
        "torch/onnxruntime/tensorrt); gpu or npu (Intel, openvino)"
    )
    threads: int | None = Field(None, ge=1, description="Intra-op threads; default: all cores")
    usd_per_hour: float | None = Field(None, ge=0, description="Price of the machine serving the model")
    instance: str | None = Field(
        None, description="Cloud instance type from the built-in price table (e.g. c7i.large); "
        "sets usd_per_hour unless that is given"
    )
    options: Any = Field(
        default_factory=dict, validate_default=True, json_schema_extra={"type": "object"},
        description="Settings of the runtime, checked against its options model (see Runtimes below)",
    )

    @field_validator("runtime")
    @classmethod
    def _runtime(cls, v):
        if v not in RUNTIMES:
            raise ValueError(f"unknown runtime {v!r}; valid runtimes: {', '.join(RUNTIMES.names())}")
        return v

    @field_validator("options")
    @classmethod
    def _typed_options(cls, v, info):
        """The runtime's typed options; each problem keeps its key (``options.hint``)."""
        runtime = info.data.get("runtime")
        if runtime is None:  # the runtime itself is invalid: that is the problem reported
            return v
        spec = RUNTIMES.get(runtime)
        if isinstance(v, spec.options):
            return v
        if v is None:
            v = {}
        if not isinstance(v, dict):
            raise ValueError(f"options must be a mapping of {runtime} settings, got {type(v).__name__}")
        from pydantic import ValidationError

        try:
            return spec.options.model_validate(v)
        except ValidationError as err:
            problems = option_problems(err, runtime, spec.options)
            raise PydanticCustomError(
                "runtime_options", "{summary}",
                {"summary": "; ".join(f"{k}: {m}" if k else m for k, m in problems), "problems": problems},
            ) from None

    @field_serializer("options")
    def _dump_options(self, v):
        """What the user set (normalised), not every default: results.json records the target as given."""
        return v.model_dump(mode="json", exclude_unset=True) if isinstance(v, BaseModel) else v

    @model_validator(mode="after")
    def _device(self):
        spec = RUNTIMES.get(self.runtime)
        if self.device not in spec.devices:
            raise ValueError(
                f"runtime {self.runtime!r} cannot run on device {self.device!r}; "
                f"its devices: {', '.join(sorted(spec.devices))}"
            )
        if spec.check is not None and isinstance(self.options, RuntimeOptions):
            try:
                spec.check(self, self.options)
            except ValueError as err:
                raise PydanticCustomError("runtime_check", "options: {message}", {"message": str(err)}) from None
        return self

    @model_validator(mode="after")
    def _price(self):
        if self.instance is not None:
            from compress.measure.cost import lookup_price

            price = lookup_price(self.instance)
            if self.usd_per_hour is None:
                self.usd_per_hour = price.usd_per_hour
        return self
