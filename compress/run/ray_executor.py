"""Builds, evaluations and profiling as Ray tasks (``compress run --ray`` / ``--ray-address``).

- Independent branches of the variants' ``from:`` graph build in parallel: a variant's task takes
  its parent's result, so Ray starts it when the parent is built. A build that needs a GPU (a
  TensorRT engine, a step with ``device: cuda``) asks Ray for one.
- Every model is evaluated on every split in its own task.
- Timing is not spread: each group of targets is timed in ONE interleaved loop in one task, placed
  on a node that provides the custom resource ``target:<name>`` of each (``target_resource``).
- Workers read the data from the recipe's sources and artifacts from the shared store (see
  ``compress.run.ray_worker``). A task whose worker dies is retried (``MAX_RETRIES``); when the
  retries run out its variant is reported failed, never dropped.
"""

from __future__ import annotations

from pathlib import Path

from compress.artifacts import code_digest
from compress.errors import InputError, MissingDependency
from compress.run import ray_worker
from compress.run.build import Built

#: times Ray reruns a task whose worker process died (a crash, a lost node); not exceptions
MAX_RETRIES = 2
#: the object store of a local Ray started by compress: only descriptors and results go through it
LOCAL_OBJECT_STORE_BYTES = 256 * 2**20


def target_resource(target_name: str) -> str:
    """The Ray custom resource a node provides to have a recipe target's models timed on it:
    ``ray start ... --resources '{"target:cpu-openvino": 1}'``."""
    return f"target:{target_name}"


def _ray():
    try:
        import ray
    except ImportError:
        raise MissingDependency("ray", "ray", "Running on a Ray cluster (--ray, --ray-address)") from None
    return ray


def needs_gpu(recipe, name: str) -> bool:
    """Whether building a variant needs a GPU: it ends in a TensorRT engine (built for the GPU it
    runs on) or one of its steps is configured for a CUDA device."""
    if recipe.final_kinds()[name] == "tensorrt":
        return True
    return any(str(getattr(cfg, "device", "cpu")).startswith("cuda")
               for _, cfg in recipe.variants[name].step_list())


def _error_text(err: BaseException) -> str:
    """One line for results.json: the exception a task raised (not Ray's wrapper), or why it died."""
    cause = getattr(err, "cause", None)
    if isinstance(cause, BaseException):
        return f"{type(cause).__name__}: {cause}".splitlines()[0]
    lines = [line for line in str(err).splitlines() if line.strip()]
    return f"{type(err).__name__}: {lines[0] if lines else ''}"


class RayExecutor:
    """Tasks on a Ray cluster: a local one started here (``address=None``) or an existing one."""

    name = "ray"
    shared_store = True

    def __init__(self, address: str | None = None, *, log=print):
        self.ray = _ray()
        self.address = address
        self.log = log
        self._started = False
        self._groups: list[list] = []
        self._run_ref: ray_worker.RunRef | None = None  # set by build_variants, the first stage

    # --- placement, checked before anything is built ------------------------------------------

    def _start(self, targets=()) -> None:
        """Join the cluster, or start a local Ray that provides ``targets`` (this machine is every one)."""
        ray = self.ray
        if ray.is_initialized():
            return
        if self.address is None:
            ray.init(resources={target_resource(t.name): 1 for t in targets},
                     object_store_memory=LOCAL_OBJECT_STORE_BYTES, include_dashboard=False,
                     configure_logging=False)
        else:
            try:
                ray.init(address=self.address, configure_logging=False)
            except (ConnectionError, RuntimeError) as err:
                raise InputError(
                    f"could not join the Ray cluster at {self.address} ({err}): start its head with "
                    "`ray start --head --port PORT` and give --ray-address HEAD_IP:PORT"
                ) from None
        self._started = True

    def check(self, recipe) -> None:
        ray = self.ray
        self._start(recipe.targets)
        nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
        where = self.address or "the local Ray"
        missing = [t.name for t in recipe.targets if not any(target_resource(t.name) in n for n in nodes)]
        if missing:
            example = ", ".join(f'"{target_resource(m)}": 1' for m in missing)
            raise InputError(
                f"no node of the Ray cluster at {where} provides target(s) {missing}, so their models "
                f"cannot be timed there: start a node on that hardware with `ray start --address "
                f"{self.address or 'HEAD'} --resources '{{{example}}}'`, or remove the target from the recipe"
            )
        gpu = [n for n in recipe.variants if needs_gpu(recipe, n)]
        if gpu and not any(n.get("GPU", 0) >= 1 for n in nodes):
            raise InputError(f"variants {gpu} need a GPU to build, and no node of the Ray cluster at {where} "
                             "has one: add a GPU node (`ray start --num-gpus 1 ...`)")
        self._groups = profile_groups(recipe.targets, nodes)
        self.log(f"ray: {len(nodes)} node(s), {int(sum(n.get('CPU', 0) for n in nodes))} CPU(s); targets timed "
                 f"on: {'; '.join(' + '.join(t.name for t in g) for g in self._groups)}")

    def _run(self, recipe, recipe_path: Path, cache, baseline) -> ray_worker.RunRef:
        if cache.root is None:
            raise ValueError("a Ray run needs an artifact store every worker reads (Cache with a root)")
        import torch

        return ray_worker.RunRef(recipe, Path(recipe_path).resolve(), Path(cache.root).resolve(), code_digest(),
                                 baseline.digest, torch.get_num_threads())

    def _task(self, fn, **options):
        return self.ray.remote(max_retries=MAX_RETRIES, retry_exceptions=False, **options)(fn)

    # --- the three stages ----------------------------------------------------------------------

    def build_variants(self, recipe, recipe_path, baseline, splits, cache, workroot, progress=None, log=print):
        run = self._run_ref = self._run(recipe, recipe_path, cache, baseline)
        refs = {}
        for name in recipe.variant_order():
            parent = recipe.variants[name].from_
            task = self._task(ray_worker.build, num_cpus=1, num_gpus=1 if needs_gpu(recipe, name) else 0)
            refs[name] = task.options(name=f"build {name}").remote(run, name, refs.get(parent))
        built: dict[str, Built] = {}
        for name, ref in refs.items():
            parent = recipe.variants[name].from_
            try:
                b = self.ray.get(ref)
            except Exception as err:
                if parent is not None and not built[parent].ok:
                    b = Built(name, error=f"not built: the variant it starts from ({parent}) failed")
                else:
                    b = Built(name, error=f"build on Ray failed: {_error_text(err)}")
            if b.ok:
                b.artifact.model_spec = baseline.model_spec
            log(f"{name}: " + ("built" if b.ok else f"failed ({b.error})"))
            built[name] = b
        return built

    def evaluate_models(self, recipe, recipe_path, splits, models, roles, corrupted, load, eval_target,
                        progress=None):
        from compress.run.evaluate import eval_keys, model_results

        run = self._run_ref
        keys = eval_keys(roles, splits, corrupted)
        refs = {}
        for name, art in models.items():
            target = eval_target(art)
            task = self._task(ray_worker.evaluate, num_cpus=1, num_gpus=0 if target.device == "cpu" else 1)
            for key in keys:
                refs[name, key] = task.options(name=f"evaluate {name} on {key}").remote(
                    run, name, ray_worker.light(art), target, key)
        out: dict = {}
        for name in models:
            try:
                got = {key: self.ray.get(refs[name, key]) for key in keys}
            except Exception as err:
                if name == "baseline":
                    raise
                out[name] = RuntimeError(_error_text(err))
                continue
            out[name] = model_results(got, roles, corrupted)
        return out

    def profile_pairs(self, recipe, recipe_path, pairs, make_batch, settings, progress=None, log=print):
        run = self._run_ref
        refs = []
        for group in self._groups:
            names = {t.name for t in group}
            mine = {k: (ray_worker.light(a), t) for k, (a, t) in pairs.items() if t.name in names}
            if not mine:
                continue
            gpu = any(t.device != "cpu" for t in group)
            task = self._task(ray_worker.profile, num_cpus=1, num_gpus=1 if gpu else 0,
                              resources={target_resource(n): 1 for n in names})
            log(f"profiling {len(mine)} model/target pair(s) of {sorted(names)} on a node providing them ...")
            refs.append(task.options(name=f"profile {'+'.join(sorted(names))}").remote(run, mine))
        out: dict = {}
        for ref in refs:
            out.update(self.ray.get(ref))  # a lost timing task fails the run: exit 3, nothing written
        return out

    def map(self, fn, items, *, num_cpus=1, num_gpus=0, resources=None):
        self._start()
        task = self._task(fn, num_cpus=num_cpus, num_gpus=num_gpus, resources=resources or {})
        refs = [task.remote(item) for item in items]
        out = []
        for ref in refs:
            try:
                out.append(self.ray.get(ref))
            except Exception as err:
                out.append(RuntimeError(_error_text(err)))
        return out

    def slots(self) -> int:
        """The cluster's CPUs (alive nodes): how many one-CPU tasks run at once."""
        self._start()
        return max(1, int(sum(n["Resources"].get("CPU", 0) for n in self.ray.nodes() if n.get("Alive"))))

    def close(self) -> None:
        if self._started and self.ray.is_initialized():
            self.ray.shutdown()
        self._started = False

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def profile_groups(targets, nodes: list[dict]) -> list[list]:
    """Targets timed together: each joins the first group that one node provides all of (so models
    of targets on the same machine share one interleaved loop, as in-process), else starts a group."""
    groups: list[list] = []
    for t in targets:
        for g in groups:
            wanted = [target_resource(x.name) for x in (*g, t)]
            if any(all(w in n for w in wanted) for n in nodes):
                g.append(t)
                break
        else:
            groups.append([t])
    return groups
