"""The page of `skinclf serve` in a real browser: Playwright driving Debian's Chromium.

An accepted image shows its class probabilities as bars (the same numbers as the API); a
model that abstains shows "uncertain, refer to a dermatologist" (and, for an unfamiliar
image, that it does not look like a dermoscopic image) instead of a diagnosis. The page
fetches nothing but the server's own files. Screenshots are saved as test artifacts (pytest's
tmp dir, and $SKINCLF_ARTIFACTS when set). Skipped only when no Chromium exists, and never
when $CI is set: there it fails.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

CHROMIUM = Path(os.environ.get("SKINCLF_CHROMIUM", "/usr/bin/chromium"))
HEADLINE = {
    "uncertain": "Uncertain \u2014 refer to a dermatologist",
    "unfamiliar": "This does not look like a dermoscopic image",
}


def _missing() -> str | None:
    if not CHROMIUM.is_file():
        return f"no Chromium at {CHROMIUM} (apt-get install chromium)"
    for module in ("playwright", "fastapi", "httpx"):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed (pip install -e '.[dev]')"
    return None


if (reason := _missing()) is not None:
    if os.environ.get("CI"):
        pytest.fail(f"the browser test cannot run on CI: {reason}", pytrace=False)
    pytest.skip(reason, allow_module_level=True)

import httpx  # noqa: E402
from playwright.sync_api import Browser, Page, expect, sync_playwright  # noqa: E402

from test_serve import Server, serving  # noqa: E402


def _selective(path: Path, **fields) -> Path:
    """A selective.json on msp with the given fields (the rest: an SGR fit with no solution)."""
    from skinclf.contracts.selective import Selective, save_selective

    base = Selective(
        score="msp",
        temperature=None,
        threshold=None,
        target_risk=0.05,
        delta=0.1,
        solution_exists=False,
        fitted_on="calib",
        n_calib=100,
        calib_coverage=0.0,
        calib_risk=None,
        bound=None,
    )
    return save_selective(dataclasses.replace(base, **fields), path)


@pytest.fixture(scope="module")
def servers(trained_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """Two servers of the trained run: `accepted` (the confidence gate off: it never
    abstains) and `abstains` (no threshold met the target risk: it abstains on everything)."""
    from skinclf.predictor.export import export_model

    root = tmp_path_factory.mktemp("serve-browser")
    selective = {
        "accepted": _selective(root / "off.json", confidence_gate="off"),
        "abstains": _selective(root / "none.json"),
    }
    with ExitStack() as stack:
        running: dict[str, Server] = {}
        for name, sel in selective.items():
            export_model(trained_run, root / name, selective=sel)
        for name in selective:  # both start at once
            log = root / f"{name}.log"
            running[name] = stack.enter_context(serving(root / name, log, wait=False))
        for server in running.values():
            server.wait_ready()
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    args = ["--no-sandbox"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=args)
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("screenshots")


@pytest.fixture(scope="module")
def image(learnable_sample: Path) -> Path:
    """A generated lesion-like image (read-only)."""
    return sorted(learnable_sample.rglob("*.jpg"))[0]


def _screenshot(page: Page, folder: Path, name: str) -> Path:
    path = folder / name
    page.screenshot(path=path, full_page=True)
    assert path.stat().st_size > 1000
    if os.environ.get("SKINCLF_ARTIFACTS"):
        target = Path(os.environ["SKINCLF_ARTIFACTS"])
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target / name)
    return path


def _analyse(browser: Browser, server: Server, image: Path, route=None) -> tuple[Page, list]:
    """Open the page, pick `image`, wait for the answer; (page, every URL it requested)."""
    page = browser.new_page(viewport={"width": 1000, "height": 720})
    requested: list[str] = []
    page.on("request", lambda r: requested.append(r.url))
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    if route is not None:
        page.route("**/predict", route)
    page.goto(f"{server.url}/")
    # a locator, not wait_for_function: a string predicate is re-evaluated with eval() in the
    # page when it is not true at once, which the page's CSP (no 'unsafe-eval') refuses
    expect(page.locator("#model-id")).to_have_text(re.compile(r"\S"), timeout=60_000)
    page.set_input_files("#file", str(image))
    page.wait_for_selector("#result:not([hidden])", timeout=60_000)
    assert not errors, errors
    return page, requested


def _bars(page: Page) -> dict[str, float]:
    return {
        li.get_attribute("data-class"): float(li.get_attribute("data-probability"))
        for li in page.query_selector_all("#probs li")
    }


def _api(server: Server, image: Path) -> dict:
    """The server's JSON answer for `image`, asked directly."""
    files = {"files": (image.name, image.read_bytes(), "image/jpeg")}
    return httpx.post(f"{server.url}/predict", files=files, timeout=60).json()


def test_an_accepted_image_shows_its_probabilities(
    browser: Browser, servers: dict, image: Path, artifacts: Path
) -> None:
    server = servers["accepted"]
    page, requested = _analyse(browser, server, image)
    expected = _api(server, image)["results"][0]
    assert expected["abstain"] is False
    bars = _bars(page)
    assert list(bars) == list(expected["probabilities"])
    assert all(abs(bars[c] - p) < 1e-9 for c, p in expected["probabilities"].items())
    assert page.get_attribute("#result", "data-abstain") == "false"
    verdict = page.inner_text("#verdict")
    assert verdict.startswith("Most likely:") and f"({expected['top_class']})" in verdict
    # its gates are off: the page never calls the answer "confident enough"
    assert "Caution" in verdict and "never abstains" in verdict
    assert "confident enough" not in verdict
    assert "not a diagnosis" in page.inner_text("#notice")
    assert page.is_visible("#preview")
    assert all(u.startswith((server.url, "blob:")) for u in requested), requested
    _screenshot(page, artifacts, "serve-accepted.png")
    page.close()


def test_an_abstaining_model_shows_no_diagnosis(
    browser: Browser, servers: dict, image: Path, artifacts: Path
) -> None:
    server = servers["abstains"]
    page, requested = _analyse(browser, server, image)
    expected = _api(server, image)["results"][0]
    assert (expected["abstain"], expected["abstain_reason"]) == (True, "uncertain")
    assert page.get_attribute("#result", "data-reason") == "uncertain"
    verdict = page.inner_text("#verdict")
    # a model whose policy abstains on every image says so, not "not confident on this image"
    assert verdict.startswith(HEADLINE["uncertain"]) and "abstains on every image" in verdict
    assert "Most likely" not in verdict and "not used" in page.inner_text("#probs-title")
    assert _bars(page) == expected["probabilities"]
    assert all(u.startswith((server.url, "blob:")) for u in requested), requested
    _screenshot(page, artifacts, "serve-abstained.png")
    page.close()


def test_an_unfamiliar_image_is_named_so(browser: Browser, servers: dict, image: Path) -> None:
    """The page's words for the OOD gate's reason (the server's answer, relabelled)."""
    from skinclf.contracts.selective import REASON_MESSAGES

    server = servers["abstains"]
    body = _api(server, image)
    body["results"][0].update(
        abstain=True, abstain_reason="unfamiliar", message=REASON_MESSAGES["unfamiliar"]
    )
    page, _ = _analyse(browser, server, image, route=lambda route: route.fulfill(json=body))
    verdict = page.inner_text("#verdict")
    assert verdict.startswith(HEADLINE["unfamiliar"]) and REASON_MESSAGES["unfamiliar"] in verdict
    assert page.get_attribute("#result", "data-reason") == "unfamiliar"
    page.close()


def test_a_refused_file_shows_the_servers_sentence(
    browser: Browser, servers: dict, tmp_path: Path
) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    page = browser.new_page()
    page.goto(f"{servers['accepted'].url}/")
    page.set_input_files("#file", str(text))
    page.wait_for_selector("#error:not([hidden])", timeout=60_000)
    assert page.inner_text("#error") == "notes.txt: image is not a readable image file."
    assert page.is_hidden("#result")
    page.close()


def test_the_api_docs_render_offline(browser: Browser, servers: dict) -> None:
    server = servers["accepted"]
    page = browser.new_page()
    requested: list[str] = []
    page.on("request", lambda r: requested.append(r.url))
    page.goto(f"{server.url}/docs")
    page.wait_for_selector("text=/predict", timeout=60_000)
    paths = page.inner_text("#swagger-ui")
    assert "/health" in paths and "/model" in paths
    assert all(u.startswith((server.url, "data:")) for u in requested), requested
    page.close()
