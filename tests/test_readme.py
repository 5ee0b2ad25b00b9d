"""README.md stays true: its layout table names every package of edc/."""

from conftest import PROJECT_ROOT


def test_the_layout_table_lists_every_package_of_edc():
    readme = (PROJECT_ROOT / "README.md").read_text(encoding="utf-8")
    packages = sorted(p.parent.name for p in (PROJECT_ROOT / "edc").glob("*/__init__.py"))
    assert packages and [name for name in packages if f"| `edc/{name}/` |" not in readme] == []
