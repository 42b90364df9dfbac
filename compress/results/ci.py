"""What CI systems read: JUnit XML (one test case per gate check) and GitHub's step summary.

JUnit is the format GitHub Actions reporters, GitLab (``artifacts:reports:junit``), Jenkins and
Azure Pipelines display as tests. Mapping, per variant (the test-case class name is
``compress.<recipe>.<variant>``):

- one test case per gate check, named after its rule (and target and batch size); a failed check
  is a ``<failure>`` whose message is the check's detail;
- a variant that failed to build or run: one test case ``build`` with an ``<error>``;
- a variant with ``gate: false``: one ``<skipped>`` test case ``gate``.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path

from compress.errors import InputError

STEP_SUMMARY_ENV = "GITHUB_STEP_SUMMARY"


def _case_name(check: dict) -> str:
    name = check["rule"]
    if check.get("target") is not None:
        name += f" [{check['target']}"
        name += f", batch {check['batch_size']}]" if check.get("batch_size") is not None else "]"
    return name


def junit_cases(results: dict) -> list[dict]:
    """The test cases, as plain dicts: {classname, name, outcome (passed|failed|error|skipped),
    message}. Pure."""
    prefix = f"compress.{results['recipe']['name']}"
    cases = []
    for variant, v in results["variants"].items():
        classname = f"{prefix}.{variant}"
        gate = v.get("gate") or {}
        if v.get("status") == "failed":
            cases.append({"classname": classname, "name": "build", "outcome": "error",
                          "message": v.get("error") or "the variant failed"})
            continue
        if gate.get("verdict") == "not gated":
            cases.append({"classname": classname, "name": "gate", "outcome": "skipped",
                          "message": "gate: false in the recipe"})
            continue
        for check in gate.get("checks", []):
            cases.append({"classname": classname, "name": _case_name(check),
                          "outcome": "passed" if check["passed"] else "failed", "message": check["detail"]})
    return cases


def junit_xml(results: dict) -> str:
    """JUnit XML of a gated run (see the module docstring for the mapping)."""
    cases = junit_cases(results)
    count = {k: sum(c["outcome"] == k for c in cases) for k in ("failed", "error", "skipped")}
    wall_s = (results.get("run") or {}).get("wall_s") or 0.0
    attrs = {"name": f"compress gate: {results['recipe']['name']}", "tests": str(len(cases)),
             "failures": str(count["failed"]), "errors": str(count["error"]),
             "skipped": str(count["skipped"]), "time": f"{wall_s:.3f}"}
    root = ET.Element("testsuites", attrs)
    suite = ET.SubElement(root, "testsuite", {**attrs, "timestamp": (results.get("run") or {}).get("started", "")})
    props = ET.SubElement(suite, "properties")
    for key, value in (results.get("verdict") or {}).get("rules", {}).items():
        if value is not None:
            ET.SubElement(props, "property", {"name": f"gate.{key}", "value": str(value)})
    for c in cases:
        el = ET.SubElement(suite, "testcase", {"classname": c["classname"], "name": c["name"], "time": "0"})
        if c["outcome"] == "failed":
            ET.SubElement(el, "failure", {"message": c["message"], "type": "GateFailure"}).text = c["message"]
        elif c["outcome"] == "error":
            ET.SubElement(el, "error", {"message": c["message"], "type": "VariantFailed"}).text = c["message"]
        elif c["outcome"] == "skipped":
            ET.SubElement(el, "skipped", {"message": c["message"]})
        else:
            ET.SubElement(el, "system-out").text = c["message"]
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def write_junit(results: dict, path: Path) -> Path:
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(junit_xml(results))
    except OSError as err:
        raise InputError(f"cannot write the JUnit file {path}: {err}; pass a writable --junit path") from None
    return path


def summary_markdown(results: dict, report_path: Path | None = None) -> str:
    """The part of the report a PR reader needs: the verdict and each target's table."""
    from compress.report.markdown import comparison_table, verdict_section

    out = [f"## compress: {results['recipe']['name']}", verdict_section(results)]
    for t in results["targets"]:
        out.append(f"**Target `{t['name']}`** ({t['runtime']} on {t['device']})")
        out.append(comparison_table(results, t["name"]))
    if report_path is not None:
        out.append(f"Full report: `{report_path}`")
    return "\n\n".join(out) + "\n"


def append_step_summary(markdown: str, env: dict | None = None) -> Path | None:
    """Append ``markdown`` to the file named by $GITHUB_STEP_SUMMARY; None when it is not set."""
    env = os.environ if env is None else env
    target = env.get(STEP_SUMMARY_ENV)
    if not target:
        return None
    path = Path(target)
    try:
        with path.open("a", encoding="utf-8") as fh:
            fh.write(markdown if markdown.endswith("\n") else markdown + "\n")
    except OSError as err:
        raise InputError(f"cannot append to {STEP_SUMMARY_ENV}={target}: {err}") from None
    return path
