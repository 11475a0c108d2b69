"""A static QA page for an archive output folder: ``index.html`` and the gain plot ``qa_gain.png``.

Reads ``summary.csv`` and ``failures.csv`` (written by :mod:`pipeline.archive_report`; a missing file shows
as an empty table) and the ``qa_*.png`` panels inside each listed study folder (one or two levels
down). The page opens from the file system: every link is relative, nothing is fetched from the
network, CSS and the table-sorting script are inline.
"""
from __future__ import annotations

import csv
import datetime as dt
import html
import math
from pathlib import Path, PurePath
from urllib.parse import quote

from pipeline import __version__
from pipeline.atomic import atomic_file
from pipeline.dicom.uids import path_safe_uid

GAIN_PLOT = "qa_gain.png"
INDEX = "index.html"
DPI = 100
FONT_PT = 10.0
SUMMARY_COLUMNS = ["study_uid", "status", "series_denoised", "series_skipped", "series_failed", "slices",
                   "files_skipped", "autoencoder_psnr_db", "best_filter", "best_filter_psnr_db", "seconds",
                   "noise_estimate_hu"]
FAILURE_COLUMNS = ["study_uid", "series_uid", "path", "reason"]


def read_rows(path: Path) -> list[dict[str, str]]:
    """The rows of a CSV file with a header; ``[]`` if the file is missing."""
    if not path.exists():
        return []
    with open(path, newline="") as fh:
        return [{k: v or "" for k, v in row.items() if k is not None} for row in csv.DictReader(fh)]


def psnr_gain(row: dict[str, str]) -> float | None:
    """autoencoder_psnr_db - best_filter_psnr_db of a summary row (dB); ``None`` when either is empty
    or not a finite number."""
    try:
        gain = float(row.get("autoencoder_psnr_db", "")) - float(row.get("best_filter_psnr_db", ""))
    except ValueError:
        return None
    return gain if math.isfinite(gain) else None


def short_uid(uid: str, keep: int = 10) -> str:
    """The last ``keep`` characters of a long UID behind an ellipsis (UIDs differ at the end)."""
    return uid if len(uid) <= keep + 2 else "\u2026" + uid[-keep:]


def study_images(output_dir: Path, study_uid: str) -> list[Path]:
    """The ``qa_*.png`` files of a study folder and of its subfolders (one level), relative to
    ``output_dir``, sorted; ``[]`` if the UID cannot name a folder or the folder is missing."""
    try:
        folder = Path(output_dir) / path_safe_uid(study_uid, "StudyInstanceUID")
    except ValueError:
        return []
    if not folder.is_dir():
        return []
    found = [*folder.glob("qa_*.png"), *folder.glob("*/qa_*.png")]
    return sorted(p.relative_to(output_dir) for p in found if p.is_file() and not p.name.startswith("."))


def write_dashboard(output_dir: Path, title: str = "ct-denoise nightly QA") -> Path:
    """Write ``qa_gain.png`` and ``index.html`` into ``output_dir`` (each atomically); returns the
    path of ``index.html``."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        raise FileNotFoundError(f"{output_dir}: no such output folder; run the archive first")
    summary = read_rows(output_dir / "summary.csv")
    failures = read_rows(output_dir / "failures.csv")
    gains = [(row.get("study_uid", ""), g) for row in summary if (g := psnr_gain(row)) is not None]
    _write_gain_plot(output_dir / GAIN_PLOT, gains)
    images = {row.get("study_uid", ""): study_images(output_dir, row.get("study_uid", "")) for row in summary}
    reports = [name for name in ("summary.csv", "failures.csv") if (output_dir / name).exists()]
    generated = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    page = render_page(title, summary, failures, images, reports, generated)
    index = output_dir / INDEX
    atomic_file(index, lambda tmp: Path(tmp).write_text(page, encoding="utf-8"))
    return index


def _write_gain_plot(path: Path, gains: list[tuple[str, float]]) -> None:
    # A bare Figure on an Agg canvas, not pyplot: no global figure registry, no backend switch.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    width_in = min(max(12.0, 0.25 * len(gains)), 60.0)  # room for one label per bar
    fig = Figure(figsize=(width_in, 5.0), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ax.tick_params(labelsize=FONT_PT)
    if not gains:
        ax.set_axis_off()
        ax.text(0.5, 0.5, "no scored studies", ha="center", va="center", fontsize=FONT_PT + 6,
                transform=ax.transAxes)
    else:
        xs = list(range(len(gains)))
        values = [g for _, g in gains]
        ax.bar(xs, values, color=["tab:green" if v >= 0 else "tab:red" for v in values])
        ax.axhline(0.0, color="0.2", lw=1)
        pad = max(0.0, (8 - len(gains)) / 2)  # a few studies: bars of the usual width, centred
        ax.set_xlim(-0.5 - pad, len(gains) - 0.5 + pad)
        ax.set_xticks(xs, [short_uid(uid) for uid, _ in gains], rotation=90 if len(gains) > 8 else 0,
                      fontsize=FONT_PT)
        ax.set_xlabel("study (end of the StudyInstanceUID)", fontsize=FONT_PT)
        ax.set_ylabel("PSNR gain (dB)", fontsize=FONT_PT)
        ax.grid(axis="y", alpha=0.3)
    ax.set_title("autoencoder PSNR - best classical filter PSNR, per study (above 0: the model wins)",
                 fontsize=FONT_PT + 2)
    atomic_file(path, lambda tmp: fig.savefig(tmp, format="png", dpi=DPI))


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _href(relative: Path) -> str:
    """A relative URL for a file under the output folder (percent-encoded, then HTML-escaped)."""
    return _e(quote(relative.as_posix()))


def _anchor(uid: str) -> str:
    return "study-" + quote(uid, safe="")


def _table(table_id: str, columns: list[str], rows: list[dict[str, str]], empty: str,
           link_column: str | None = None) -> str:
    # <wbr> after each '_': long CSV column names may wrap instead of widening the table
    head = "".join(f'<th scope="col" title="sort by {_e(c)}">{_e(c).replace("_", "_<wbr>")}</th>' for c in columns)
    if not rows:
        body = f'<tr><td colspan="{len(columns)}" class="empty">{_e(empty)}</td></tr>'
    else:
        body = "".join(
            "<tr>" + "".join(
                f'<td class="uid"><a href="#{_e(_anchor(r.get(c, "")))}">{_e(r.get(c, ""))}</a></td>'
                if c == link_column and r.get(c) else f"<td>{_e(r.get(c, ''))}</td>"
                for c in columns) + "</tr>\n"
            for r in rows)
    return (f'<div class="scroll"><table id="{_e(table_id)}" class="sortable"><thead><tr>{head}</tr></thead>'
            f"<tbody>{body}</tbody></table></div>")


def _study_section(row: dict[str, str], images: list[Path]) -> str:
    uid = row.get("study_uid", "")
    gain = psnr_gain(row)
    facts = [f"status {row.get('status', '')}", f"{row.get('series_denoised', '')} series denoised",
             f"{row.get('slices', '')} slices"]
    if gain is not None:
        facts.append(f"autoencoder {gain:+.2f} dB against {row.get('best_filter', '')}")
    if row.get("noise_estimate_hu"):
        facts.append(f"estimated noise {row['noise_estimate_hu']} HU")
    parts = [f'<section id="{_e(_anchor(uid))}"><h3>{_e(uid)}</h3><p>{_e(" | ".join(facts))}</p>']
    if not images:
        parts.append('<p class="empty">no QA panels in this study folder</p>')
    for rel in images:
        src = _href(rel)
        parts.append(f'<figure><a href="{src}"><img src="{src}" alt="{_e(rel.name)}" loading="lazy"></a>'
                     f"<figcaption>{_e(rel.as_posix())}</figcaption></figure>")
    parts.append("</section>")
    return "\n".join(parts)


def render_page(title: str, summary: list[dict[str, str]], failures: list[dict[str, str]],
                images: dict[str, list[Path]], reports: list[str], generated: str) -> str:
    """The dashboard HTML. ``images``: study UID -> its panel files, relative to the output folder;
    ``reports``: the CSV files beside the page to link to; ``generated``: when, as text."""
    links = " | ".join(f'<a href="{_href(Path(name))}">{_e(name)}</a>' for name in reports)
    sections = "\n".join(_study_section(row, images.get(row.get("study_uid", ""), []))
                         for row in summary)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_e(title)}</title>
<style>{_CSS}</style>
</head>
<body>
<h1>{_e(title)}</h1>
<p class="meta">ct-denoise {_e(__version__)}, page generated {_e(generated)}. {links}</p>
<h2>Studies ({len(summary)})</h2>
<p class="meta">Click a column header to sort. PSNR in dB against the reference, on seeded noisy copies.</p>
{_table("summary", SUMMARY_COLUMNS, summary, "no summary.csv, or no studies in it", link_column="study_uid")}
<h2>Model against the best classical filter</h2>
<figure><img src="{_e(GAIN_PLOT)}" alt="PSNR gain per study"></figure>
<h2>Failures ({len(failures)})</h2>
<p class="meta">File names only: folder names of an archive may carry patient names
(full paths are in failures.csv).</p>
{_table("failures", FAILURE_COLUMNS, [dict(r, path=PurePath(r.get("path", "")).name) for r in failures], "no failures")}
<h2>QA panels per study</h2>
{sections or '<p class="empty">no studies</p>'}
<script>{_JS}</script>
</body>
</html>
"""


_CSS = """
body { font: 15px/1.4 system-ui, sans-serif; margin: 1.5em; color: #1d1d1d; background: #fafafa; }
h1 { font-size: 1.6em; } h2 { margin-top: 1.6em; border-bottom: 1px solid #ccc; } h3 { font-size: 1.05em; }
.meta, figcaption { color: #555; font-size: 0.9em; }
.scroll { overflow-x: auto; } table { border-collapse: collapse; margin: 0.5em 0; background: #fff; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; font-variant-numeric: tabular-nums; }
th { background: #e8ecf1; cursor: pointer; user-select: none; }
th.asc::after { content: " \\25B2"; } th.desc::after { content: " \\25BC"; }
td { overflow-wrap: anywhere; max-width: 40em; } td.uid { white-space: nowrap; }
.empty { color: #777; font-style: italic; }
figure { margin: 0.8em 0; } img { max-width: 100%; height: auto; border: 1px solid #ddd; background: #fff; }
section { margin-bottom: 2em; }
"""

# Sorts a table's rows by the clicked column: numerically when both cells are numbers, else as text.
_JS = """
document.querySelectorAll("table.sortable").forEach(function (table) {
  table.querySelectorAll("th").forEach(function (th, col) {
    th.addEventListener("click", function () {
      var body = table.tBodies[0];
      var rows = Array.prototype.slice.call(body.rows).filter(function (r) { return r.cells.length > 1; });
      var asc = !th.classList.contains("asc");
      table.querySelectorAll("th").forEach(function (h) { h.classList.remove("asc", "desc"); });
      th.classList.add(asc ? "asc" : "desc");
      rows.sort(function (a, b) {
        var x = a.cells[col].textContent.trim(), y = b.cells[col].textContent.trim();
        if (x === "" || y === "") { return (x === "") - (y === ""); }  // empty cells last
        var cmp = (isFinite(x) && isFinite(y)) ? Number(x) - Number(y)
          : x.localeCompare(y, undefined, {numeric: true});
        return asc ? cmp : -cmp;
      });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
});
"""
