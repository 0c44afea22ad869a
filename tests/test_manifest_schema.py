"""The manifest JSON Schema (toolkit/schemas/manifest.schema.json) describes what export writes.

Every available target and precision is exported once at 64x96 and each manifest.json is
validated; the schema itself is checked against the 2020-12 meta-schema and must refuse
manifests that are incomplete, mistyped or carry malformed checksums.
"""
from __future__ import annotations

import copy
import importlib.resources
import json
from pathlib import Path

import pytest

jsonschema = pytest.importorskip("jsonschema", reason="jsonschema is not installed (pip install '.[dev]')")
from jsonschema import Draft202012Validator  # noqa: E402

def load_schema() -> dict:
    """The schema as the installed package ships it (package data), not by a path into the repo."""
    return json.loads((importlib.resources.files("toolkit") / "schemas" / "manifest.schema.json").read_text())


@pytest.fixture(scope="module")
def validator() -> Draft202012Validator:
    schema = load_schema()
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


@pytest.fixture(scope="module")
def manifests(small_artifacts) -> dict[tuple[str, str], dict]:
    """Each available (target, precision), exported once per run; {(target, precision): manifest.json as saved}."""
    saved = {key: json.loads((Path(m["path"]) / "manifest.json").read_text()) for key, m in small_artifacts.items()}
    if not saved:
        pytest.skip("no target's runtime and converter are installed")
    return saved


def test_schema_is_valid_2020_12_and_shipped_as_package_data():
    schema = load_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(schema)
    assert "schemas/*.json" in (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()


def test_schema_agrees_with_the_toolkit():
    """Constants the schema repeats: the reader's identifiers and required keys, targets, precisions, variants."""
    from targets import TARGETS
    from toolkit.deploy.artifact import REQUIRED, SCHEMA, SCHEMA_VERSION
    from toolkit.model.variants import VARIANTS

    schema = load_schema()
    props = schema["properties"]
    assert props["schema"]["const"] == SCHEMA and props["schema_version"]["const"] == SCHEMA_VERSION
    assert set(REQUIRED) <= set(schema["required"]) == set(props)
    assert set(props["target"]["enum"]) == set(TARGETS)
    assert set(props["precision"]["enum"]) == {p for t in TARGETS.values() for p in t.precisions}
    assert set(props["runtime"]["properties"]["name"]["enum"]) == {t.runtime_package for t in TARGETS.values()}
    assert set(props["model"]["properties"]["variant"]["enum"]) == set(VARIANTS)


def test_every_exported_manifest_validates(manifests, validator):
    failures = {
        f"{target} {precision}": [f"{e.json_path}: {e.message}" for e in validator.iter_errors(manifest)]
        for (target, precision), manifest in manifests.items()
    }
    assert not any(failures.values()), json.dumps(failures, indent=2)
    assert all("macs_per_pixel" in m["model"] for m in manifests.values())  # optional in the schema, always written now
    # Both kinds of I/O contract were seen whenever TFLite INT8 could be built.
    if ("tflite", "int8") in manifests:
        assert "quantization" in manifests[("tflite", "int8")]["output"]


def _errors(validator, manifest) -> list[str]:
    return [e.message for e in validator.iter_errors(manifest)]


@pytest.fixture
def manifest(manifests) -> dict:
    """A fresh copy of one real manifest to break."""
    return copy.deepcopy(next(iter(manifests.values())))


def test_missing_validation_is_refused(manifest, validator):
    del manifest["validation"]
    assert any("'validation' is a required property" in m for m in _errors(validator, manifest))


@pytest.mark.parametrize("size", ["64x96", [64, "96"], [64.5, 96], [64], [64, 96, 1], [64, 100], [0, 96], None])
def test_wrong_size_is_refused(manifest, validator, size):
    manifest["size"] = size
    assert _errors(validator, manifest)


@pytest.mark.parametrize("digest", ["0" * 63, "0" * 65, "A" * 64, "g" * 64, "", 12345, None])
def test_bad_sha256_is_refused(manifest, validator, digest):
    name = next(iter(manifest["files"]))
    manifest["files"][name] = digest
    assert _errors(validator, manifest)
    manifest = copy.deepcopy(manifest)
    manifest["files"].clear()
    assert _errors(validator, manifest)  # an artifact without files


def test_other_breakage_is_refused(manifest, validator):
    """A few more the schema is strict about: file names outside the folder, contract and validation types."""
    cases = []
    m = copy.deepcopy(manifest)
    m["files"]["../outside.bin"] = "0" * 64
    cases.append(("path escape", m))
    m = copy.deepcopy(manifest)
    m["validation"]["psnr_vs_fp32_db"] = "40"
    cases.append(("psnr as text", m))
    m = copy.deepcopy(manifest)
    m["validation"]["attempts"] = []
    cases.append(("no attempts", m))
    m = copy.deepcopy(manifest)
    m["input"]["dtype"] = "int8"  # integer I/O without its scale and zero point
    cases.append(("int8 without quantization", m))
    m = copy.deepcopy(manifest)
    m["input"]["layout"] = "NHWC" if m["input"]["layout"] == "NCHW" else "NCHW"  # shape in the other order
    cases.append(("layout and shape disagree", m))
    m = copy.deepcopy(manifest)
    from toolkit.deploy.artifact import SCHEMA_VERSION

    m["schema_version"] = SCHEMA_VERSION + 1
    cases.append(("future version", m))
    m = copy.deepcopy(manifest)
    m["precision"] = "int8"  # an INT8 artifact must say what it was calibrated on
    m["calibration"] = None
    cases.append(("int8 without calibration", m))
    m = copy.deepcopy(manifest)
    m["surprise"] = 1
    cases.append(("unknown top-level field", m))
    accepted = [name for name, broken in cases if not _errors(validator, broken)]
    assert not accepted, accepted
