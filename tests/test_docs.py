"""The README and docs/: every relative link reaches a file (and a heading, for `#anchor`
links), and the README stays short enough to read to the end."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
README_MAX_LINES = 260

FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.MULTILINE | re.DOTALL)
INLINE_CODE = re.compile(r"`[^`\n]*`")
# [text](target) and ![alt](target); the target ends at whitespace or ')'.
LINK = re.compile(r"!?\[[^\]\n]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)
EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)  # http:, https:, mailto:, ...


def without_code_blocks(text: str) -> str:
    return FENCE.sub("", text)


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: markup dropped, lower case, punctuation other
    than '-' and '_' removed, each space a '-'."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link keeps its text
    text = text.replace("`", "").replace("*", "")
    text = text.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set:
    """Every heading anchor of a page; repeated headings get -1, -2, ... as on GitHub."""
    seen: dict = {}
    result = set()
    for heading in HEADING.findall(without_code_blocks(path.read_text())):
        slug = github_slug(heading)
        count = seen.get(slug, 0)
        result.add(slug if count == 0 else f"{slug}-{count}")
        seen[slug] = count + 1
    return result


def relative_links(path: Path) -> list:
    text = INLINE_CODE.sub("", without_code_blocks(path.read_text()))
    return [target for target in LINK.findall(text) if not EXTERNAL.match(target)]


def broken_links(path: Path) -> list:
    """'target: why' for every relative link of `path` that leads nowhere."""
    broken = []
    for target in relative_links(path):
        file_part, _, anchor = target.partition("#")
        destination = (path.parent / file_part).resolve() if file_part else path
        if not destination.exists():
            broken.append(f"{target}: no file {destination}")
        elif anchor and destination.suffix == ".md" and anchor not in anchors(destination):
            broken.append(f"{target}: no heading with anchor #{anchor} in {destination.name}")
    return broken


def test_github_slugs():
    assert github_slug("Reading the tables") == "reading-the-tables"
    assert github_slug("3. `datamodel_pc`") == "3-datamodel_pc"
    assert github_slug("Paper tables, the report, and the CIFAR-10 configuration") == (
        "paper-tables-the-report-and-the-cifar-10-configuration"
    )
    assert github_slug("Why `shift_over_std`?") == "why-shift_over_std"


def test_broken_links_are_found(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "page.md").write_text("# A page\n\n## Some section\n")
    readme = tmp_path / "README.md"
    readme.write_text(
        "# Title\n\n"
        "[fine](docs/page.md) [fine](docs/page.md#some-section) [fine](#title)\n"
        "[missing file](docs/nowhere.md) [missing anchor](docs/page.md#no-section)\n"
        "[missing here](#nothing) [external](https://example.org/x.md)\n"
        "`[in code](docs/ignored.md)`\n\n"
        "```\n[in a block](docs/ignored.md)\n# not a heading\n```\n"
    )
    found = broken_links(readme)
    assert [entry.split(":")[0] for entry in found] == [
        "docs/nowhere.md",
        "docs/page.md#no-section",
        "#nothing",
    ]
    assert "not-a-heading" not in anchors(readme)


def test_docs_exist_and_the_readme_links_them():
    assert (ROOT / "docs").is_dir()
    linked = {target.partition("#")[0] for target in relative_links(ROOT / "README.md")}
    pages = {f"docs/{page.name}" for page in PAGES[1:]}
    assert pages <= linked, f"docs pages the README does not link: {sorted(pages - linked)}"


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_every_relative_link_resolves(page):
    assert broken_links(page) == []


def test_the_readme_stays_short():
    lines = len((ROOT / "README.md").read_text().splitlines())
    assert lines <= README_MAX_LINES, (
        f"README.md has {lines} lines (at most {README_MAX_LINES}): move a section to docs/"
    )
