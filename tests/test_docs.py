"""The documentation a user reads: the generated configuration page is current, links resolve."""

import importlib.util
import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"
PAGE = REPO / "docs" / "configuration.md"
LINKED_PAGES = [
    REPO / "README.md",
    *sorted((REPO / "docs").glob("*.md")),
    REPO / "config" / "README.md",
    REPO / "bench" / "results" / "README.md",
]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def load_generator():
    spec = importlib.util.spec_from_file_location(
        "make_configuration", REPO / "docs/make_configuration.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_configuration_page_is_what_the_script_writes_from_the_schema():
    generator = load_generator()
    assert PAGE.read_text() == generator.render(SCHEMA), (
        "docs/configuration.md is stale: run `python docs/make_configuration.py`"
    )


def test_check_fails_saying_what_to_run_when_the_schema_changed(tmp_path, capsys):
    schema = yaml.safe_load(SCHEMA.read_text())
    schema["properties"]["dedupe"]["description"] = "A description the page does not have yet."
    edited = tmp_path / "config.schema.yaml"
    edited.write_text(yaml.safe_dump(schema, sort_keys=False))
    generator = load_generator()
    assert generator.main(["--check", "--schema", str(edited), "--out", str(PAGE)]) == 1
    assert "run `python docs/make_configuration.py`" in capsys.readouterr().err.lower()
    assert generator.main(["--check", "--out", str(PAGE)]) == 0


def test_every_schema_key_has_a_row_with_its_default():
    schema = yaml.safe_load(SCHEMA.read_text())
    page = PAGE.read_text()
    for key, node in schema["properties"].items():
        keys = [(key, node)] + [
            (f"{key}.{child}", sub) for child, sub in node.get("properties", {}).items()
        ]
        for name, sub in keys:
            row = re.search(rf"^\| `{re.escape(name)}` \| ([^|]*) \|", page, re.M)
            assert row, f"docs/configuration.md has no row for {name!r}"
            if isinstance(sub.get("default"), int | str) and not isinstance(sub["default"], bool):
                assert f"`{sub['default']}`" == row.group(1).strip(), name


@pytest.mark.parametrize("page", LINKED_PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_points_to_an_existing_file(page):
    broken = []
    for number, line in enumerate(page.read_text().splitlines(), 1):
        for target in LINK.findall(line):
            if re.match(r"^[a-z]+:", target) or target.startswith("#"):
                continue
            if not (page.parent / target.split("#")[0]).exists():
                broken.append(f"{page.relative_to(REPO)}:{number}: {target!r}")
    assert not broken, "links to missing files:\n" + "\n".join(broken)
