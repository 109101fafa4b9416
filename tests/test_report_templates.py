"""The report templates: shared macros format numbers like the reports always did, and escape."""

from __future__ import annotations

from skinclf.templates import environment, num, render

TABLE = '{% from "macros.html" import table %}{{ table(header, rows, left) }}'


def _table(header: list, rows: list, left: tuple = ()) -> str:
    return environment().from_string(TABLE).render(header=header, rows=rows, left=left)


def test_numbers_checks_and_intervals() -> None:
    assert [num(None), num(float("nan")), num(3), num(0.12345), num(0.5, 4)] == [
        "–",
        "–",
        "3",
        "0.123",
        "0.5000",
    ]
    html = _table(
        ["a", "b"],
        [[True, False], [{"v": 0.5, "ci": [0.25, 0.75]}, {"v": 0.5, "ci": [None, None]}]],
    )
    assert "<td>yes</td>" in html and '<td><b class="bad">no</b></td>' in html
    assert '<td>0.500 <span class="ci">[0.250, 0.750]</span></td>' in html
    assert "<td>0.500</td>" in html  # no interval when it is undefined
    pair = _table(["x"], [[{"v": 0.9, "paren": 0.8}, {"v": 0.1, "other": None}]])
    assert '0.900 <span class="ci">(0.800)</span>' in pair and "0.100 / –" in pair


def test_text_is_escaped_and_left_columns_marked() -> None:
    html = _table(["set <b>", "name"], [["<script>x</script>", "a & b"]], left=(1,))
    assert "<script>" not in html and "&lt;script&gt;" in html and "a &amp; b" in html
    assert "<th>set &lt;b&gt;</th>" in html and '<td class="l">a &amp; b</td>' in html


def test_base_page_inlines_the_one_stylesheet() -> None:
    page = render("data.html", title="t <1>", datasets="d", kpis=[("1", "images")])
    assert page.startswith("<!DOCTYPE html>") and "<title>t &lt;1&gt;</title>" in page
    assert "<style>" in page and ".kpi b{" in page and ".ci{" in page
    assert "<link" not in page and "<script" not in page and "http" not in page


def test_the_risk_coverage_figure_draws_the_policy_score_and_four_best_others() -> None:
    from skinclf.contracts.metrics_report import SelectiveScore
    from skinclf.evaluate.report import shown_scores

    names = [f"s{i}" for i in range(12)]
    selective = {n: SelectiveScore(aurc=0.5 - 0.01 * i) for i, n in enumerate(names)}
    assert shown_scores(names, selective, "s0") == ["s0", "s11", "s10", "s9", "s8"]
    assert shown_scores(names, selective, "not_there") == ["s11", "s10", "s9", "s8"]
    assert shown_scores(names[:2], selective, "s1") == ["s1", "s0"]
    assert shown_scores(["a", "s3"], selective, "x") == ["s3", "a"]  # no AURC: last
