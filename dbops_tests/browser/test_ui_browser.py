"""An operator's day in the real Dagster UI, in headless Chromium: the lifecycle in the asset graph, an asset's plots
and check results, a materialization launched by a click that succeeds, a failed check shown as failed, and a run
started from the CLI that the UI can re-execute.

The target is a migrated test database (the reference schema). Before the UI starts, `dbops run` materializes
``schema_migrations`` and ``schema_catalog`` (``no_schema_drift`` passes), then an index is created by hand: the
materialization launched from the UI then succeeds while its ``no_schema_drift`` check fails, and the catalog's
numeric metadata has two points per series (``changes_added`` 0, then 1).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from dbops.pg.connect import connection
from dbops_tests.browser.conftest import UiInstance
from dbops_tests.conftest import run_dbops

STEPS = {"migrate", "catalog", "profile", "loadtest", "backup", "restore", "validate", "security", "maintain",
         "health"}
TARGET = "dbops"  # no configuration file: the one target, aimed at the test database by DBOPS_DATABASE_URL
RUN_TIMEOUT_MS = 150_000  # a run launched by the webserver starts a process that loads the code location

# The series a metadata plot draws, read from the props of the chart's React component (the chart is a canvas),
# keyed by the plot's title (the metadata key).
PLOT_SERIES_JS = """
() => Array.from(document.querySelectorAll('canvas')).map(canvas => {
  const fiberKey = Object.keys(canvas).find(k => k.startsWith('__reactFiber$'));
  let fiber = fiberKey ? canvas[fiberKey] : null, series = null;
  for (let depth = 0; fiber && depth < 30; depth++, fiber = fiber.return) {
    const props = fiber.memoizedProps;
    if (props && props.data && props.data.datasets) {
      series = props.data.datasets.map(d => d.data.map(p => p.y));
      break;
    }
  }
  let el = canvas, title = null;
  for (let i = 0; i < 6 && el && !title; i++) {
    el = el.parentElement;
    title = el && el.innerText.trim().split('\\n')[0];
  }
  return {title, series};
})
"""


def graphql(base: str, query: str) -> dict:
    import urllib.request

    request = urllib.request.Request(f"{base}/graphql", data=json.dumps({"query": query}).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as resp:
        answer = json.loads(resp.read())
    assert "errors" not in answer, answer
    return answer["data"]


class Steps:
    """Each step of the test screenshots the page when it ends (NN-name.png); a failing step adds
    NN-name-FAILED.png and names the folder in the error."""

    def __init__(self, page, folder: Path) -> None:  # type: ignore[no-untyped-def]
        self.page, self.folder, self.count, self.timings = page, folder, 0, {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        self.count += 1
        stem, started = f"{self.count:02d}-{name}", time.monotonic()
        try:
            yield
        except BaseException as exc:
            self.shot(f"{stem}-FAILED")
            exc.add_note(f"step {name!r} failed; screenshots in {self.folder}")
            print(f"\nscreenshots of the failed step {name!r}: {self.folder}")
            raise
        finally:
            self.timings[name] = round(time.monotonic() - started, 1)
        self.shot(stem)

    def shot(self, stem: str) -> None:
        try:
            self.page.screenshot(path=str(self.folder / f"{stem}.png"), full_page=False)
        except Exception as exc:  # a screenshot must not hide the real failure
            print(f"no screenshot {stem}: {exc}")


def test_operator_day_in_the_dagster_ui(ui_instance: UiInstance, request: pytest.FixtureRequest,
                                        screenshots: Path) -> None:
    from playwright.sync_api import expect

    started = time.monotonic()
    # Before the UI: one run from the CLI (the history the UI must show, and the run to re-execute).
    cli = run_dbops(["run", f'key:"{TARGET}/schema_migrations" or key:"{TARGET}/schema_catalog"'], ui_instance.env,
                    timeout=300)
    assert cli.returncode == 0, cli.stdout[-3000:] + cli.stderr[-3000:]
    with connection(ui_instance.database_url) as conn:  # drift: an index outside the migrations
        conn.execute("CREATE INDEX orders_by_hand_idx ON app.orders (currency)")
    cli_seconds = time.monotonic() - started

    base = request.getfixturevalue("webserver")  # after the CLI run: one process creates the storage's tables
    page = request.getfixturevalue("page")
    step = Steps(page, screenshots)
    nodes = graphql(base, "{ assetNodes { assetKey { path } groupName } }")["assetNodes"]
    groups = {n["groupName"] for n in nodes}
    assert STEPS <= groups, f"lifecycle steps missing from the code location: {STEPS - groups}"
    runs = graphql(base, "{ runsOrError { ... on Runs { results { runId status } } } }")["runsOrError"]["results"]
    assert [r["status"] for r in runs] == ["SUCCESS"], runs
    cli_run_id = runs[0]["runId"]

    with step("lineage"):
        page.goto(f"{base}/asset-groups")
        graph = page.locator("foreignObject")  # the graph's nodes are HTML inside the SVG
        for group in sorted(groups):
            expect(graph.filter(has_text=re.compile(rf"^{group}\b"))).not_to_have_count(0, timeout=90_000)

    with step("catalog"):
        page.set_viewport_size({"width": 1600, "height": 2600})  # every row of the (virtualized) list at once
        page.goto(f"{base}/assets")
        for node in nodes:
            expect(page.get_by_text(" / ".join(node["assetKey"]["path"]), exact=True).first).to_be_visible()
        page.set_viewport_size({"width": 1600, "height": 1000})

    with step("materialize-by-click"):
        page.goto(f"{base}/assets/{TARGET}/schema_catalog")
        expect(page.get_by_text("Latest materialization")).to_be_visible()
        page.get_by_role("button", name="Materialize").first.click()
        launched = page.get_by_text(re.compile(r"^Launched run"))
        confirm = page.get_by_role("button", name="Confirm")  # asked when an upstream asset was never materialized
        expect(launched.or_(confirm)).to_be_visible()
        if confirm.is_visible():
            confirm.click()
        expect(launched).to_be_visible()
        page.get_by_role("link", name="View").first.click()
        expect(page).to_have_url(re.compile(r"/runs/[0-9a-f-]{36}"))
        ui_run_id = page.url.split("/runs/", 1)[1][:36]
        outcome = page.get_by_text(re.compile(r"^(Success|Failure|Canceled)$"))
        expect(outcome.first).to_be_visible(timeout=RUN_TIMEOUT_MS)
        assert outcome.first.inner_text() == "Success"
        expect(page.get_by_role("button", name="Re-execute").first).to_be_enabled()

    with step("plots"):
        page.goto(f"{base}/assets/{TARGET}/schema_catalog")
        page.get_by_role("button", name="Plots").click()
        expect(page.locator("canvas")).not_to_have_count(0)
        for title in ("tables", "changes_added"):
            expect(page.get_by_text(title, exact=True).first).to_be_visible()
        page.get_by_text("changes_added", exact=True).first.scroll_into_view_if_needed()
        plots = {p["title"]: p["series"] for p in page.evaluate(PLOT_SERIES_JS)}
        assert plots.get("changes_added") == [[0, 1]], plots  # the CLI's first snapshot, then the index by hand
        tables = plots.get("tables")
        assert tables and len(tables[0]) == 2 and tables[0][0] == tables[0][1] > 0, plots

    with step("failed-check"):
        page.goto(f"{base}/assets/{TARGET}/schema_catalog?view=checks")
        item = page.get_by_text("no_schema_drift").first
        expect(item).to_be_visible()
        expect(page.get_by_text("Evaluation result")).to_be_visible()
        expect(page.get_by_text("Failed", exact=True)).not_to_have_count(0)
        expect(page.get_by_text("Passed", exact=True)).to_have_count(0)  # the CLI run's pass is history only
        expect(page.get_by_text("differences", exact=True).first).to_be_visible()

    checks = graphql(base, f'{{ assetNodes(assetKeys: [{{path: ["{TARGET}", "schema_catalog"]}}]) {{ '
                           "assetChecksOrError { ... on AssetChecks { checks { name "
                           "executionForLatestMaterialization { runId status evaluation { success } } } } } } }")
    latest = checks["assetNodes"][0]["assetChecksOrError"]["checks"][0]["executionForLatestMaterialization"]
    assert latest["runId"] == ui_run_id and latest["evaluation"]["success"] is False, latest

    with step("cli-run-re-execute"):
        page.goto(f"{base}/runs/{cli_run_id}")
        expect(page.get_by_text("Success", exact=True).first).to_be_visible()
        expect(page.get_by_role("button", name="Re-execute").first).to_be_enabled(timeout=20_000)

    print(f"\nbrowser test: CLI {cli_seconds:.1f} s, steps {step.timings}, total {time.monotonic() - started:.1f} s; "
          f"screenshots in {screenshots}")
