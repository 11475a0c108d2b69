import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import matplotlib.colors as mcolors
import matplotlib.image as mpimg
import numpy as np
import pytest

from pipeline.atomic import write_csv
from pipeline.inference.window import Window, hu_to_unit
from pipeline.qa.dashboard import FAILURE_COLUMNS, SUMMARY_COLUMNS, psnr_gain, short_uid, study_images, write_dashboard
from pipeline.qa.metrics import psnr, ssim
from pipeline.qa.panels import PanelSlice, write_series_panels
from pipeline.qa.series import SliceScore

REPO = Path(__file__).resolve().parents[1]
STUDY_OK = "1.2.826.0.1.3680043.2.1125.101"
STUDY_FAILED = "1.2.826.0.1.3680043.2.1125.202"
SERIES = "1.2.826.0.1.3680043.2.1125.101.7"
WINDOW = Window(-1000.0, 1000.0)
FAILURE_REASON = "cannot decode <Transfer Syntax 1.2.840.10008.1.2.4.100> & no codec"


class Refs(HTMLParser):
    """Every href/src of a page, and its visible text."""

    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.refs += [v for k, v in attrs if k in ("href", "src") and v is not None]

    def handle_data(self, data):
        self.text.append(data)


def parse(page: str) -> Refs:
    parser = Refs()
    parser.feed(page)
    parser.close()
    return parser


def one_series_panels(folder: Path) -> list[Path]:
    """Panels of a 2-slice 64 x 64 disc phantom, the methods being known perturbations of it."""
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[:64, :64]
    slices, scores = [], []
    for i in range(2):
        hu = np.where((yy - 32) ** 2 + (xx - 32) ** 2 < 600, 40.0 + 10 * i, -1000.0).astype(np.float32)
        ref = hu_to_unit(hu, WINDOW, clip=True)
        qa = {m: np.clip(ref + rng.normal(0, s, ref.shape), 0, 1).astype(np.float32)
              for m, s in [("noisy", 0.03), ("autoencoder", 0.005), ("gaussian", 0.01), ("median", 0.012)]}
        per = {m: (psnr(ref, a), ssim(ref, a)) for m, a in qa.items()}
        scores += [SliceScore(SERIES, f"{SERIES}.{i}", i, m, *v) for m, v in per.items()]
        slices.append(PanelSlice(i, hu, hu + rng.normal(0, 8, hu.shape).astype(np.float32), qa, per))
    return write_series_panels(folder, SERIES, slices, scores, WINDOW)


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    """An archive output folder: a denoised study with panels, a failed one without, one failure."""
    out = tmp_path_factory.mktemp("archive")
    write_csv(out / "summary.csv", SUMMARY_COLUMNS, [
        [STUDY_OK, "ok", 1, 0, 0, 2, 0, "38.500", "median", "35.250", "12.5", "11.8; 47.0"],
        [STUDY_FAILED, "failed", 0, 0, 1, 0, 0, "", "", "", "3.1", ""],
    ])
    write_csv(out / "failures.csv", FAILURE_COLUMNS, [[STUDY_FAILED, "1.2.3.9", "in/ct/img0001.dcm", FAILURE_REASON]])
    one_series_panels(out / STUDY_OK)
    write_dashboard(out)
    return out


def test_every_link_of_the_page_is_a_local_file_that_exists(archive):
    index = archive / "index.html"
    page = index.read_text(encoding="utf-8")
    refs = parse(page).refs
    assert "http://" not in page.lower() and "https://" not in page.lower()
    files = [r for r in refs if not r.startswith("#")]
    for ref in files:
        parts = urlsplit(ref)
        assert not parts.scheme and not parts.netloc and not ref.startswith("/"), ref
        assert (index.parent / unquote(parts.path)).is_file(), ref
    panels = sorted((archive / STUDY_OK).glob("qa_*.png"))
    assert len(panels) == 3  # two slices and the PSNR plot
    assert {f"{STUDY_OK}/{p.name}" for p in panels} <= set(files)
    assert "qa_gain.png" in files and "summary.csv" in files and "failures.csv" in files
    anchors = [r for r in refs if r.startswith("#")]
    assert all(f'id="{a[1:]}"' in page for a in anchors) and len(anchors) == 2  # summary rows -> sections


def test_tables_show_the_csv_rows_escaped(archive):
    page = (archive / "index.html").read_text(encoding="utf-8")
    text = " ".join(parse(page).text)
    assert FAILURE_REASON in text  # the parser unescapes: the reason reads as written
    assert "<Transfer Syntax" not in page and "&lt;Transfer Syntax 1.2.840.10008.1.2.4.100&gt; &amp; no codec" in page
    assert "img0001.dcm" in text and "in/ct/img0001.dcm" not in text  # file name only: folders may name patients
    for uid in (STUDY_OK, STUDY_FAILED):
        assert uid in text
    assert "+3.25 dB against median" in text and "estimated noise 11.8; 47.0 HU" in text
    assert "no QA panels in this study folder" in text  # the failed study has no folder


def test_gain_plot_draws_the_model_against_the_best_filter(archive, tmp_path):
    plot = mpimg.imread(archive / "qa_gain.png")[..., :3]
    assert plot.shape[:2] == (500, 1200)
    green = np.abs(plot - np.asarray(mcolors.to_rgb("tab:green"))).max(axis=2) < 0.02
    red = np.abs(plot - np.asarray(mcolors.to_rgb("tab:red"))).max(axis=2) < 0.02
    assert green.sum() > 500 and red.sum() == 0  # one positive gain, no negative one
    assert psnr_gain({"autoencoder_psnr_db": "38.500", "best_filter_psnr_db": "35.250"}) == pytest.approx(3.25)
    assert psnr_gain({"autoencoder_psnr_db": "", "best_filter_psnr_db": "35.0"}) is None
    assert psnr_gain({"autoencoder_psnr_db": "inf", "best_filter_psnr_db": "35.0"}) is None
    assert short_uid(STUDY_OK) == "\u20262.1125.101" and short_uid("1.2.3") == "1.2.3"


def test_missing_reports_give_an_empty_page_and_a_placeholder_plot(tmp_path):
    index = write_dashboard(tmp_path)
    page = index.read_text(encoding="utf-8")
    assert "no summary.csv, or no studies in it" in page and "no failures" in page
    assert not [r for r in parse(page).refs if r.startswith(("summary", "failures"))]  # no dead links
    plot = mpimg.imread(tmp_path / "qa_gain.png")[..., :3]
    assert plot.shape[:2] == (500, 1200) and plot.var() > 0  # the "no scored studies" text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index.html", "qa_gain.png"]  # no temporaries
    with pytest.raises(FileNotFoundError, match="no such output folder"):
        write_dashboard(tmp_path / "absent")


def test_study_images_are_the_qa_pngs_one_or_two_levels_down(tmp_path):
    study = tmp_path / "1.2.3"
    (study / "series" / "deeper").mkdir(parents=True)
    for name in ["qa_a.png", "series/qa_b.png", "series/deeper/qa_c.png", ".qa_a.png.tmp-1-x",
                 "other.png", "qa_notes.txt"]:
        (study / name).write_bytes(b"")
    assert study_images(tmp_path, "1.2.3") == [Path("1.2.3/qa_a.png"), Path("1.2.3/series/qa_b.png")]
    assert study_images(tmp_path, "1.2.4") == []  # no folder
    assert study_images(tmp_path, "../etc") == []  # not a UID: never leaves the output folder


def test_summary_columns_match_the_archive_report():
    from pipeline.archive_report import FAILURES_HEADER, SUMMARY_HEADER

    assert SUMMARY_COLUMNS == SUMMARY_HEADER and FAILURE_COLUMNS == FAILURES_HEADER


def _chromium() -> str | None:
    found = shutil.which("chromium")
    if found:
        return found
    script = REPO / ".ci" / "install-chromium"
    try:
        subprocess.run(["bash", str(script)], check=False, capture_output=True, timeout=900)
    except subprocess.TimeoutExpired:
        return None
    return shutil.which("chromium")


def test_chromium_renders_the_page_with_its_images(archive, tmp_path):
    chromium = _chromium()
    if chromium is None:
        pytest.skip("chromium is not installed and bash .ci/install-chromium could not install it "
                    "(needs root or sudo and Debian's package registry)")
    shot = tmp_path / "shot.png"
    cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
           f"--screenshot={shot}", "--window-size=1280,2000", (archive / "index.html").resolve().as_uri()]
    done = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    pixels = mpimg.imread(shot)[..., :3]
    assert pixels.shape[:2] == (2000, 1280)
    assert pixels.mean(axis=2).var() > 1e-3  # not a blank page
    # the gain plot's bar is on screen: the page loaded its image from a relative file:// path
    green = np.abs(pixels - np.asarray(mcolors.to_rgb("tab:green"))).max(axis=2) < 0.03
    assert green.sum() > 500
