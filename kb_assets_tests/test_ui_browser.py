"""The Dagster UI end to end, as a user drives it: `kb-assets ui RECIPE` on the demo inputs (the recipe's own run
history), Debian's headless Chromium through Playwright. One UI serves the module:

- the lineage link `kb-assets ui` prints opens with every asset group expanded (the default view collapses them);
- open the asset graph, find gene_embeddings, launch one partition from the UI, wait for the run to succeed, then
  read tokenizer_version and rc_averaged from the partition's materialization metadata;
- last, SIGTERM to `kb-assets ui` ends every process it started (webserver, daemon, code servers) within 10 s.

Screenshots of each step (and of a failure) go to $KB_ASSETS_TEST_ARTIFACTS/ui, else test-artifacts/ui, beside the
UI's log. The browser tests skip when there is no Chromium at $KB_ASSETS_CHROMIUM (default /usr/bin/chromium);
`.ci/run` installs it."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import time
from pathlib import Path

import pytest

from kb_assets.cli import dagster_home
from kb_assets.encoders.tokenizer import load_tokenizer
from kb_assets.settings import PROJECT_ROOT
from kb_assets_tests.conftest import write_recipe
from kb_assets_tests.dagster_dev import kb_assets_ui, materialize_upstream_of, session_members, tail

pytestmark = pytest.mark.slow

CHROMIUM = Path(os.environ.get("KB_ASSETS_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]
ASSET = "gene_embeddings"
PARTITION = "chr2"
RUN_TIMEOUT_MS = 150_000  # queue → daemon → run worker loads torch and the definitions → embeds → checks
STEP_TIMEOUT_MS = 30_000
STOP_WITHIN_S = 10.0


@pytest.fixture(scope="module")
def artifacts() -> Path:
    folder = Path(os.environ.get("KB_ASSETS_TEST_ARTIFACTS") or PROJECT_ROOT / "test-artifacts") / "ui"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "failure.png").unlink(missing_ok=True)
    return folder


@pytest.fixture(scope="module")
def ui(demo_recipe, tmp_path_factory, artifacts):
    """`kb-assets ui` on a small-gene-set demo recipe whose history already holds everything upstream of
    gene_embeddings [chr2]: the UI run below is gene_embeddings alone."""
    recipe = write_recipe(tmp_path_factory.mktemp("ui") / "recipe", demo_recipe)
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("DAGSTER_HOME", raising=False)
        home = dagster_home(recipe)
    materialize_upstream_of(recipe, home, ASSET, PARTITION)
    with kb_assets_ui(recipe, artifacts / "kb-assets-ui.log") as running:
        yield running


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium, as .ci/run does, or set "
                    f"KB_ASSETS_CHROMIUM)")
    sync_playwright = pytest.importorskip("playwright.sync_api",
                                          reason="the playwright package is not installed").sync_playwright
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        yield launched
        launched.close()


@contextlib.contextmanager
def new_page(browser, artifacts: Path):
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1600, "height": 1000})
    page.set_default_timeout(STEP_TIMEOUT_MS)
    expect.set_options(timeout=STEP_TIMEOUT_MS)
    try:
        yield page
    except Exception:
        with contextlib.suppress(Exception):
            page.screenshot(path=artifacts / "failure.png")
        raise
    finally:
        page.close()


def metadata_value(page, key: str) -> str:
    """The value cell of the metadata table row named `key`."""
    from playwright.sync_api import expect

    row = page.get_by_role("row").filter(has=page.get_by_role("cell", name=key, exact=True))
    expect(row).to_have_count(1)
    row.scroll_into_view_if_needed()
    return row.get_by_role("cell").nth(1).inner_text().strip()


def select_only_partition(page, dialog, partition: str) -> None:
    """In the launch dialog's custom partition picker, leave `partition` checked and every other one unchecked
    (the dialog opens with none selected: Dagster ≥ 1.10 makes one choose)."""
    from playwright.sync_api import expect

    dialog.get_by_role("button", name="Custom", exact=True).click()
    dialog.locator('[aria-haspopup="dialog"]').click()  # the picker's trigger: chips or "Select a partition…"
    search = page.get_by_placeholder("Filter partitions")
    expect(search).to_be_visible()
    items = page.get_by_role("menuitem").filter(has_not_text=re.compile(r"^Select all"))
    expect(items.filter(has=page.get_by_text(partition, exact=True))).to_have_count(1)
    for item in items.all():
        checkbox = item.get_by_role("checkbox")
        wanted = item.get_by_text(partition, exact=True).count() > 0
        if checkbox.is_checked() != wanted:
            item.click()
            expect(checkbox).to_be_checked(checked=wanted)
    # Close the picker with a click on the dialog's title (Escape would close the dialog as well).
    dialog.get_by_text(re.compile(r"^Launch runs to materialize")).click()
    expect(search).to_be_hidden()


@pytest.mark.browser
def test_the_printed_lineage_link_opens_with_every_group_expanded(ui, browser, artifacts):
    """The default lineage shows collapsed group boxes; the link `kb-assets ui` prints shows the assets of every
    group (reference, subjects, embeddings, cohort, diagnostics)."""
    from playwright.sync_api import expect

    printed = re.search(r"every group expanded: (\S+)\)", ui.log.read_text())
    assert printed, tail(ui.log)
    shown = ["reference_genome", "subject_haplotypes", "gene_embeddings", "covariates", "rc_stability"]
    with new_page(browser, artifacts) as page:
        page.goto(f"{ui.url}/asset-groups")
        expect(page.get_by_text("Global asset lineage", exact=True)).to_be_visible()
        expect(page.get_by_text("embeddings", exact=True).first).to_be_visible()
        assert all(page.get_by_text(asset, exact=True).count() == 0 for asset in shown)
        page.goto(printed[1])
        for asset in shown:
            expect(page.get_by_text(asset, exact=True).first).to_be_visible()
        page.screenshot(path=artifacts / "00-lineage-expanded.png")


@pytest.mark.browser
def test_materialize_a_partition_from_the_ui(ui, browser, artifacts):
    """Asset graph → gene_embeddings → Materialize selected… → chr2 → Launch 1 run → the run succeeds → the chr2
    materialization, made by that run, shows tokenizer_version (the checkpoint tokenizer's SHA-256) and
    rc_averaged = true."""
    from playwright.sync_api import expect

    with new_page(browser, artifacts) as page:
        # The asset graph; find gene_embeddings with the graph's "Jump to…" search, which selects its node.
        page.goto(f"{ui.url}/asset-groups")
        expect(page.get_by_text("Global asset lineage", exact=True)).to_be_visible()
        page.get_by_placeholder("Jump to…").fill(ASSET)
        page.get_by_role("menuitem", name=ASSET, exact=True).click()
        expect(page).to_have_url(re.compile(rf"/asset-groups/{ASSET}\b"))
        materialize = page.get_by_role("button", name="Materialize selected")
        expect(materialize).to_be_enabled()
        page.screenshot(path=artifacts / "01-asset-graph.png")

        # Materialize… → the launch dialog → custom partition selection → chr2 alone.
        materialize.click()
        dialog = page.get_by_role("dialog").filter(has_text=f"Launch runs to materialize {ASSET}")
        expect(dialog).to_be_visible()
        select_only_partition(page, dialog, PARTITION)
        expect(dialog.get_by_text("1 partition", exact=True)).to_be_visible()
        launch = dialog.get_by_role("button", name="Launch 1 run", exact=True)
        expect(launch).to_be_enabled()
        page.screenshot(path=artifacts / "02-launch-dialog.png")
        launch.click()

        # The toast links the run it launched; follow it and wait for the run to end.
        toast = page.get_by_role("listitem").filter(has_text=re.compile(r"Launched run \w+"))
        view = toast.get_by_role("link", name="View", exact=True)
        expect(view).to_be_visible()
        run_id = view.get_attribute("href").rstrip("/").split("/")[-1].split("?")[0]
        view.click()
        expect(page).to_have_url(re.compile(rf"/runs/{run_id}"))
        expect(page.get_by_text(f"partition: {PARTITION}", exact=True)).to_be_visible()
        status = page.get_by_text(re.compile(r"^(Success|Failure|Canceled)$")).first
        expect(status).to_be_visible(timeout=RUN_TIMEOUT_MS)
        page.screenshot(path=artifacts / "03-run.png")
        assert status.inner_text().strip() == "Success", f"run {run_id} ended {status.inner_text()!r}; see {ui.log}"

        # The partition's latest materialization: made by that run, with the tokenizer and RC in its metadata.
        page.goto(f"{ui.url}/assets/{ASSET}?view=partitions&partition={PARTITION}")
        expect(page.get_by_text("Latest materialization", exact=True).first).to_be_visible()
        expect(page.locator(f'a[href^="/runs/{run_id}"]').first).to_be_visible()
        tokenizer_version = metadata_value(page, "tokenizer_version")
        rc_averaged = metadata_value(page, "rc_averaged")
        page.screenshot(path=artifacts / "04-materialization-metadata.png")

    assert re.fullmatch(r"[0-9a-f]{64}", tokenizer_version), tokenizer_version
    assert tokenizer_version == load_tokenizer(ui.recipe.inputs.checkpoint).version
    assert rc_averaged == "true"


def test_sigterm_ends_every_process_the_ui_started(ui):
    """Last in the module (it stops the shared UI): SIGTERM, as a service manager or `kill` sends it, to
    `kb-assets ui`; within 10 s no process of its session is left."""
    session = ui.process.pid
    started = session_members(session)
    commands = " ".join(command for _, command in started)
    assert len(started) >= 4 and "dagster_webserver" in commands and "dagster._daemon" in commands, started
    ui.process.send_signal(signal.SIGTERM)
    begun = time.monotonic()
    while session_members(session) and time.monotonic() - begun < STOP_WITHIN_S:
        time.sleep(0.1)
    assert session_members(session) == [], f"left after {STOP_WITHIN_S:.0f} s:\n{tail(ui.log)}"
    assert ui.process.wait(timeout=1) == 0
