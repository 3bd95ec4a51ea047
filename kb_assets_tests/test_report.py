"""`kb-assets report`: one self-contained HTML page per recipe, from the catalog and the recipe's Dagster history.
Its sections, tables and checks are compared with the warehouse and the definitions; headless Chromium renders it
(every image decodes, no console error, no request beyond the file) and a screenshot goes to
$KB_ASSETS_TEST_ARTIFACTS/report, else test-artifacts/report."""

from __future__ import annotations

import contextlib
import io
import os
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from kb_assets.cli import main
from kb_assets.definitions import build_definitions
from kb_assets.report import SECTIONS
from kb_assets.settings import PROJECT_ROOT, RECIPE_ENV
from kb_assets.storage import Warehouse
from kb_assets_tests.conftest import SMALL_GENE_SET, write_recipe

pytestmark = pytest.mark.slow

CHROMIUM = Path(os.environ.get("KB_ASSETS_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]


class _Page(HTMLParser):
    """Section ids, images, links and the rows of each section's tables."""

    def __init__(self, html: str):
        super().__init__()
        self.sections: list[str] = []
        self.images: list[str] = []
        self.references: list[str] = []
        self.tags: set[str] = set()
        self.rows: dict[str, list[list[str]]] = {}
        self._cells: list[str] | None = None
        self._text: list[str] | None = None
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        self.tags.add(tag)
        if tag == "section":
            self.sections.append(attributes["id"])
        if tag == "img":
            self.images.append(attributes["src"])
        self.references += [value for name, value in attrs if name in ("href", "src") and value]
        if tag == "tr":
            self._cells = []
        if tag == "td" and self._cells is not None:
            self._text = []

    def handle_data(self, data):
        if self._text is not None:
            self._text.append(data)

    def handle_endtag(self, tag):
        if tag == "td" and self._text is not None:
            self._cells.append("".join(self._text).strip())
            self._text = None
        if tag == "tr" and self._cells:
            self.rows.setdefault(self.sections[-1], []).append(self._cells)
            self._cells = None


@pytest.fixture(scope="module")
def reported(demo_recipe, tmp_path_factory):
    """A small demo recipe materialized with the CLI (DAGSTER_HOME unset, 512 components requested), then
    `kb-assets report` to the default path."""
    recipe = write_recipe(tmp_path_factory.mktemp("report") / "recipe", demo_recipe, encoder={"dtype": "float32"})
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(io.StringIO()) as out:
        patch.delenv("DAGSTER_HOME", raising=False)
        patch.setenv(RECIPE_ENV, str(demo_recipe.source))
        assert main(["materialize", "--recipe", str(recipe.source)]) == 0
        assert main(["report", "--recipe", str(recipe.source)]) == 0
    path = recipe.warehouse.root / "report.html"
    assert f"Report: {path}" in out.getvalue()
    return recipe, path


def test_every_section_with_data_is_there_and_evaluation_is_not(reported):
    """One encoder and no brain table: no comparison and no evaluation section."""
    _, path = reported
    page = _Page(path.read_text())
    expected = ["audit", *[s.anchor for s in SECTIONS if s.anchor not in ("encoders", "evaluation")], "checks",
                "tables"]
    assert page.sections == expected


def test_self_contained(reported):
    _, path = reported
    html = path.read_text()
    page = _Page(html)
    assert "script" not in page.tags and "stylesheet" not in html
    assert all(src.startswith("data:image/png;base64,") for src in page.images)
    assert not [ref for ref in page.references if not (ref.startswith(("data:", "#")))]
    assert not re.search(r"url\(|@import|https?://", html.split("<body>")[0])
    # Plots: one per diagnostic and per partition of the token and RC histograms, the scree per fold, and more.
    assert len(page.images) >= 3 + 3 + 5


def test_tables_match_the_warehouse(reported):
    recipe, path = reported
    page = _Page(path.read_text())
    gene_rows = page.rows["gene-set"]
    assert [row[1] for row in gene_rows] == SMALL_GENE_SET  # query column, manifest order
    with Warehouse(recipe.warehouse.root).catalog(read_only=True) as connection:
        folds = connection.execute("select count(distinct fold) from cv_folds").fetchone()[0]
        views = {row[0] for row in connection.execute(
            "select view_name from duckdb_views() where not internal").fetchall()}
        pca_folds = connection.execute("select fold, n_components from subject_embeddings_pca_folds order by fold"
                                       ).fetchall()
        left_out = {row[0] for row in connection.execute("select subject_id from covariates_left_out").fetchall()}
    # The PCA section previews the per-fold table (fold first, components kept among its columns).
    assert [int(row[0]) for row in page.rows["pca"]] == [fold for fold, _ in pca_folds] == list(range(folds))
    assert all(str(n) in row for row, (_, n) in zip(page.rows["pca"], pca_folds))
    # The subjects left out are shown with the subjects (the demo's 2 only in the VCF, 2 only in the covariates).
    assert len(left_out) == 4 and left_out <= {row[0] for row in page.rows["subjects"]}
    other = {row[0] for row in page.rows["tables"]}
    assert "covariates_left_out" not in other
    shown = {name for name in views if any(name.startswith(p) for s in SECTIONS for p in s.views)}
    assert other == views - shown


def test_every_check_appears_once_per_partition(reported):
    recipe, path = reported
    graph = build_definitions(recipe).resolve_asset_graph()
    expected = sorted(
        (key.asset_key.to_user_string(), key.name, partition)
        for key in graph.asset_check_keys
        for partition in (recipe.reference.chromosomes if graph.get(key.asset_key).partitions_def else [""])
    )
    rows = _Page(path.read_text()).rows["checks"]
    assert sorted((row[1], row[2], row[3]) for row in rows) == expected
    assert {row[0] for row in rows} == {"passed"}


@pytest.mark.browser
def test_chromium_renders_it_with_every_image(reported):
    if not CHROMIUM.exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium, or set KB_ASSETS_CHROMIUM)")
    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    _, path = reported
    artifacts = Path(os.environ.get("KB_ASSETS_TEST_ARTIFACTS") or PROJECT_ROOT / "test-artifacts") / "report"
    artifacts.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1300, "height": 900})
            errors, requests = [], []
            page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.on("request", lambda request: requests.append(request.url))
            page.goto(path.as_uri())
            page.wait_for_load_state("load")
            widths = page.evaluate("Array.from(document.images, image => image.complete ? image.naturalWidth : 0)")
            heading = page.locator("h1").inner_text()
            page.screenshot(path=artifacts / "report.png", full_page=True)
            page.screenshot(path=artifacts / "report-top.png")
        finally:
            browser.close()
    assert heading == "genetics_gene_fm_pca512_v1"
    assert len(widths) == len(_Page(path.read_text()).images) and all(width > 0 for width in widths), widths
    assert errors == []
    assert [url for url in requests if not url.startswith("data:")] == [path.as_uri()]
