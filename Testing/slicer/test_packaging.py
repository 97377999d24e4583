"""The extension ships every file it needs: CMake lists vs. the files on disk, and .s4ext vs. CMakeLists."""
import re
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
MODULES = ("SynthFMSegment", "SynthFMTrain")
RESOURCE_SUFFIXES = {".png", ".ui", ".svg", ".json", ".pt"}


def cmake_text(path: Path) -> str:
    return re.sub(r"#[^\n]*", "", path.read_text())


def cmake_set(text: str, name: str) -> list:
    match = re.search(rf"set\(\s*{name}\b(.*?)\)", text, re.S)
    assert match, f"set({name} ...) missing"
    return match.group(1).split()


def expand(items: list, module: str) -> set:
    return {i.replace("${MODULE_NAME}", module) for i in items}


def top() -> str:
    return cmake_text(ROOT / "CMakeLists.txt")


def test_core_package_is_installed_completely():
    listed = set(cmake_set(top(), "SYNTHFM_CORE_PYTHON_SCRIPTS"))
    on_disk = {p.relative_to(ROOT).as_posix() for p in (ROOT / "synthfm").rglob("*.py") if "__pycache__" not in p.parts}
    assert on_disk - listed == set(), "core files not installed; add them to SYNTHFM_CORE_PYTHON_SCRIPTS"
    assert listed - on_disk == set(), "CMakeLists lists core files that do not exist"
    resources = {p.relative_to(ROOT).as_posix() for p in (ROOT / "synthfm").rglob("*")
                 if p.is_file() and p.suffix not in (".py", ".pyc")}
    assert resources <= set(cmake_set(top(), "SYNTHFM_CORE_PYTHON_RESOURCES"))


def test_shipped_decoders_are_installed_where_the_registry_finds_them():
    from synthfm.models.registry import SHIPPED_MODELS_DIR

    listed = set(cmake_set(top(), "SYNTHFM_CORE_PYTHON_RESOURCES"))
    shipped = {p.relative_to(ROOT).as_posix() for p in (ROOT / "Resources" / "models").glob("*")}
    assert shipped and shipped <= listed, "every shipped decoder/model card must be installed with the core package"
    assert all((ROOT / f).is_file() for f in listed), "CMakeLists lists resources that do not exist"
    # ctkMacroCompilePythonScript keeps the relative path: synthfm/ and Resources/models/ land side by side
    assert SHIPPED_MODELS_DIR == ROOT / "Resources" / "models"


@pytest.mark.parametrize("module", MODULES)
def test_module_files_are_listed(module):
    folder = ROOT / module
    if not (folder / "CMakeLists.txt").is_file():
        pytest.fail(f"{module}/CMakeLists.txt missing (every module is built with slicerMacroBuildScriptedModule)")
    text = cmake_text(folder / "CMakeLists.txt")
    assert "slicerMacroBuildScriptedModule" in text and "slicer_add_python_unittest" in text
    scripts = expand(cmake_set(text, "MODULE_PYTHON_SCRIPTS"), module)
    resources = expand(cmake_set(text, "MODULE_PYTHON_RESOURCES"), module)
    py = {p.relative_to(folder).as_posix() for p in folder.rglob("*.py") if "__pycache__" not in p.parts}
    res = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.suffix in RESOURCE_SUFFIXES}
    assert py == scripts, f"{module}: unlisted {py - scripts}, missing on disk {scripts - py}"
    assert res == resources, f"{module}: unlisted {res - resources}, missing on disk {resources - res}"
    assert f"{module}.py" in scripts


def test_top_level_cmake_structure():
    text = top()
    for needle in ("find_package(Slicer REQUIRED)", "include(${Slicer_USE_FILE})",
                   "include(${Slicer_EXTENSION_GENERATE_CONFIG})", "include(${Slicer_EXTENSION_CPACK})",
                   "project(SynthFM)"):
        assert needle in text
    subdirs = re.findall(r"add_subdirectory\((\w+)\)", text)
    assert sorted(subdirs) == sorted(MODULES)
    assert text.index("include(${Slicer_USE_FILE})") < text.index("add_subdirectory") < text.index("CPACK")


def s4ext() -> dict:
    fields = {}
    for line in (ROOT / "SynthFM.s4ext").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition(" ")
            fields[key] = value.strip()
    return fields


def cmake_var(name: str) -> str:
    match = re.search(rf'set\({name}\s+(?:"([^"]*)"|([^)\s]*))\s*\)', top())
    assert match, f"{name} not set in CMakeLists.txt"
    return (match.group(1) if match.group(1) is not None else match.group(2)).strip()


def test_s4ext_complete_and_consistent():
    f = s4ext()
    required = {"scm", "scmurl", "scmrevision", "depends", "build_subdirectory", "homepage", "contributors",
                "category", "iconurl", "status", "description", "screenshoturls", "enabled"}
    assert required <= set(f) and all(f[k] for k in required)
    assert f["scm"] == "git" and f["enabled"] in ("0", "1") and f["category"] == "Segmentation"
    assert "PyTorch" in f["depends"].split()
    pairs = {"homepage": "EXTENSION_HOMEPAGE", "category": "EXTENSION_CATEGORY",
             "contributors": "EXTENSION_CONTRIBUTORS", "description": "EXTENSION_DESCRIPTION",
             "iconurl": "EXTENSION_ICONURL", "screenshoturls": "EXTENSION_SCREENSHOTURLS",
             "depends": "EXTENSION_DEPENDS", "build_subdirectory": "EXTENSION_BUILD_SUBDIRECTORY"}
    for key, var in pairs.items():
        assert f[key] == cmake_var(var), f"{key} differs from {var}"
    assert f["scmurl"].startswith(f["homepage"])


def test_urls_point_at_files_in_the_repository():
    for url in (s4ext()["iconurl"], *s4ext()["screenshoturls"].split()):
        rel = url.split("/main/", 1)[1]
        assert (ROOT / rel).is_file(), f"{url} does not point at a committed file"
    with Image.open(ROOT / "Resources/Icons/SynthFM.png") as im:
        assert im.size == (128, 128)


def test_license_matches_pyproject():
    assert "Apache License" in (ROOT / "LICENSE").read_text()[:200]
    assert 'Apache-2.0' in (ROOT / "pyproject.toml").read_text()


def test_catalog_entry_follows_the_extensions_index_schema():
    """SynthFM.json as Slicer/ExtensionsIndex takes it (Slicer >= 5.8; catalog-entry schema v1.0.2: required
    $schema, category, scm_url; no other keys than the schema's; tier 1..5), consistent with CMake and .s4ext."""
    import json

    entry = json.loads((ROOT / "SynthFM.json").read_text())
    schema_keys = {"$schema", "category", "scm_url", "scm_revision", "scm_type", "build_dependencies",
                   "dicom_support_rule", "build_subdirectory", "enabled", "tier"}
    assert {"$schema", "category", "scm_url"} <= set(entry) <= schema_keys
    assert re.fullmatch(r"https://raw\.githubusercontent\.com/Slicer/Slicer/main/Schemas/"
                        r"slicer-extension-catalog-entry-schema-v1\.0\.[0-9]+\.json#", entry["$schema"])
    assert isinstance(entry["tier"], int) and 1 <= entry["tier"] <= 5
    assert all(isinstance(entry[k], str) for k in ("category", "scm_url", "scm_revision", "build_subdirectory"))
    assert entry["category"] == cmake_var("EXTENSION_CATEGORY") == s4ext()["category"]
    assert entry["build_dependencies"] == cmake_var("EXTENSION_DEPENDS").split() == s4ext()["depends"].split()
    assert entry["scm_url"] == s4ext()["scmurl"] and entry["scm_revision"] == s4ext()["scmrevision"]
    assert entry["build_subdirectory"] == cmake_var("EXTENSION_BUILD_SUBDIRECTORY")


@pytest.mark.parametrize("module", MODULES)
def test_torch_self_tests_are_opt_in_on_build_machines(module):
    """Extension build machines have no torch: CTest registers only the generic tests unless asked."""
    text = cmake_text(ROOT / module / "CMakeLists.txt")
    block = re.search(r"if\(([^)]*)\)\s*slicer_add_python_unittest\(SCRIPT", text)
    assert block and "SynthFM_TORCH_SELF_TESTS" in block.group(1)
    assert re.search(r"option\(SynthFM_TORCH_SELF_TESTS\b[^)]*OFF\)", top())
