"""Helpers of the real-browser test (tests/test_browser_*.py): a JupyterLab server on
loopback and Debian's Chromium driven by Playwright, as a learner would use them.

Measured pitfalls these helpers handle (issue 6):

* JupyterLab refuses to start as root without ``--allow-root`` (CI runs as root);
* ``jupyter lab`` starts a child server that survives killing the launcher: start
  ``jupyter-lab`` itself, with ``--ServerApp.port_retries=0`` so a busy port fails loudly;
* ``?reset`` in the URL, or tabs of an earlier notebook come back;
* JupyterLab paints off-screen cells lazily: scroll a cell into view and wait before
  reading or clicking it; read text with ``text_content()``;
* autosave writes back after two minutes: the server serves throwaway copies only;
* the Colab badge is a broken image offline: the request is aborted, never waited for;
* Chromium's background connections are refused by a closed network: its
  ``--disable-background-networking`` family of flags keeps it quiet.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

CHROMIUM = os.environ.get("DLCOURSE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
VIEWPORTS = [(1280, 800), (1440, 900)]


def missing_reason() -> str | None:
    """Why the browser test cannot run here (one line), or None when it can."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the browser test needs the Python package playwright (pip install playwright)"
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        return f"the browser test needs Chromium at {CHROMIUM} (Debian: apt-get install chromium)"
    if shutil.which("jupyter-lab") is None and not (Path(sys.executable).parent / "jupyter-lab").exists():
        return "the browser test needs jupyter-lab (pip install -r requirements.txt)"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LabServer:
    """``jupyter-lab`` (or ``jupyter-notebook``: both serve both interfaces) on 127.0.0.1 without a token."""

    def __init__(self, root: Path, log: Path):
        self.root, self.log_path = root, log
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        exe = Path(sys.executable).parent / "jupyter-lab"
        cmd = [str(exe) if exe.exists() else "jupyter-lab", "--no-browser", "--allow-root",
               "--ip=127.0.0.1", f"--port={self.port}", "--ServerApp.port_retries=0",
               "--IdentityProvider.token=", "--ServerApp.password=", "--ServerApp.disable_check_xsrf=True",
               f"--ServerApp.root_dir={root}", "--LabApp.check_for_updates_class="
               "jupyterlab.NeverCheckForUpdate"]
        # A config folder of its own: no settings, workspaces or extensions of the user's
        # ~/.jupyter, and no "get notified about Jupyter news?" toast over the screenshots.
        self.config = config = Path(tempfile.mkdtemp(prefix="jupyter-config-"))
        (config / "labconfig").mkdir()
        (config / "labconfig" / "page_config.json").write_text(json.dumps(
            {"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": True}}))
        env = dict(os.environ, OMP_NUM_THREADS="1", JUPYTER_CONFIG_DIR=str(config),
                   MPLBACKEND="module://matplotlib_inline.backend_inline")
        self._log = open(log, "w")
        self.proc = subprocess.Popen(cmd, cwd=root, stdout=self._log, stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True)
        deadline = time.monotonic() + 90
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"jupyter-lab exited with {self.proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                self.api("status")
                break
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"jupyter-lab did not answer in 90 s:\n{log.read_text()[-3000:]}")
                time.sleep(0.3)

    def api(self, path: str, method: str = "GET"):
        req = urllib.request.Request(f"{self.base}/api/{path}", method=method)
        with urllib.request.urlopen(req, timeout=10) as r:
            body = r.read()
        return json.loads(body) if body else None

    def kernels(self) -> list[dict]:
        # GET /api/kernels answers 500 while a kernel is starting (jupyter_server: its
        # last_activity is still None); ask again.
        for attempt in range(20):
            try:
                return self.api("kernels")
            except urllib.error.HTTPError:
                if attempt == 19:
                    raise
                time.sleep(0.25)

    def shutdown_kernels(self) -> None:
        for k in self.kernels():
            try:
                self.api(f"kernels/{k['id']}", method="DELETE")
            except OSError:
                pass
        for s in self.api("sessions"):
            try:
                self.api(f"sessions/{s['id']}", method="DELETE")
            except OSError:
                pass

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()
        shutil.rmtree(self.config, ignore_errors=True)


# ---------------------------------------------------------------- the page

def open_notebook(page, server: LabServer, path: str, ui: str = "lab") -> None:
    """Open ``path`` (relative to the server root) in JupyterLab (``ui="lab"``) or Notebook 7."""
    url = f"{server.base}/lab/tree/{path}?reset" if ui == "lab" else f"{server.base}/notebooks/{path}"
    page.goto(url)
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=90_000)
    wait_kernel_idle(page, server, timeout=90, settle=0.5)


def menu(page, top: str, item: str) -> None:
    page.locator(".lm-MenuBar-itemLabel").get_by_text(top, exact=True).click()
    page.locator(".lm-Menu-itemLabel").get_by_text(item, exact=True).click()


def prompts(page) -> list[str]:
    """The execution prompt of every code cell, in order ("[3]:", "[*]:", "[ ]:")."""
    return page.evaluate("""() => Array.from(document.querySelectorAll('.jp-CodeCell .jp-InputArea-prompt'))
                                 .map(e => e.textContent.trim())""")


def wait_kernel_idle(page, server: LabServer, timeout: float, settle: float = 1.5) -> None:
    """Wait until no prompt shows [*] and every kernel is idle, twice in a row ``settle`` s apart."""
    deadline = time.monotonic() + timeout
    quiet_since = None
    while True:
        busy = any("*" in p for p in prompts(page))
        kernels = server.kernels()
        idle = bool(kernels) and all(k["execution_state"] == "idle" for k in kernels)
        if not busy and idle:
            quiet_since = quiet_since or time.monotonic()
            if time.monotonic() - quiet_since >= settle:
                return
        else:
            quiet_since = None
        if time.monotonic() > deadline:
            raise AssertionError(f"kernel still busy after {timeout:.0f} s: prompts {prompts(page)}, "
                                 f"kernels {[k['execution_state'] for k in kernels]}")
        time.sleep(0.25)


def run_all(page, server: LabServer, timeout: float = 300) -> float:
    """Run → Run All Cells and wait until done; returns the seconds it took."""
    start = time.monotonic()
    menu(page, "Run", "Run All Cells")
    time.sleep(1.0)
    wait_kernel_idle(page, server, timeout)
    return time.monotonic() - start


# JupyterLab renders an error output as text of mime type stderr, like a warning; a
# traceback tells them apart.
ERRORS_JS = """() => Array.from(document.querySelectorAll(
    '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"],'
    + ' .jp-OutputArea-output[data-mime-type="application/vnd.jupyter.error"]'))
  .map(e => e.textContent)
  .filter(t => /Traceback \\(most recent call last\\)|^-{20,}/.test(t))
  .map(t => t.slice(0, 1500))"""


def error_outputs(page) -> list[str]:
    return page.evaluate(ERRORS_JS)


def save_and_read(page, server: LabServer, path: str, timeout: float = 30) -> dict:
    """File → Save Notebook, then the saved notebook as the browser wrote it."""
    file = server.root / path
    before = file.stat().st_mtime_ns
    menu(page, "File", "Save Notebook")
    deadline = time.monotonic() + timeout
    while file.stat().st_mtime_ns == before:
        if time.monotonic() > deadline:
            raise AssertionError(f"{path}: File → Save Notebook did not write the file in {timeout:.0f} s")
        time.sleep(0.2)
    time.sleep(0.3)
    return json.loads(file.read_text())


def saved_problems(nb: dict) -> list[str]:
    """Errors and unrun code cells in a notebook saved after Run All."""
    problems = []
    for i, c in enumerate(nb["cells"]):
        if c["cell_type"] != "code" or not "".join(c["source"]).strip():
            continue
        first = "".join(c["source"]).strip().splitlines()[0][:60]
        if c.get("execution_count") is None:
            problems.append(f"cell {i} ({first!r}) left unrun")
        for o in c.get("outputs", []):
            if o.get("output_type") == "error":
                problems.append(f"cell {i} ({first!r}) raised {o.get('ename')}: {o.get('evalue', '')[:200]}")
    return problems


WIDGET_REPR = re.compile(r"^\s*(VBox|HBox|Box|GridBox|Image|FloatSlider|IntSlider|FloatLogSlider|Dropdown|"
                         r"HTML|Output|Button|Label|Checkbox|IntProgress|FloatProgress|interactive)\(")
WIDGET_PLACEHOLDER = "[an interactive widget: run this cell to see it]"

WIDGET_OUTPUTS_JS = """() => Array.from(document.querySelectorAll('.jp-OutputArea-output')).map((e, i) => ({
    index: i,
    mime: e.getAttribute('data-mime-type') || '',
    widgets: e.querySelectorAll('.jupyter-widgets').length,
    sliders: e.querySelectorAll('.widget-slider .noUi-handle, .widget-slider input[type=range]').length,
    text: e.textContent.slice(0, 300),
    error: e.querySelectorAll('.jupyter-widgets-error-widget, .jp-WidgetError').length,
}))"""


def widget_problems(page) -> tuple[list[dict], list[str]]:
    """Every output that is a widget, and what is wrong with any of them."""
    outputs = page.evaluate(WIDGET_OUTPUTS_JS)
    problems, widgets_ = [], []
    for o in outputs:
        text = o["text"]
        if o["mime"] == "application/vnd.jupyter.widget-view+json" or o["widgets"]:
            widgets_.append(o)
            if o["error"] or "Error displaying widget" in text or "Error rendering" in text:
                problems.append(f"output {o['index']}: widget error: {text[:120]!r}")
            elif "Loading widget" in text:
                problems.append(f"output {o['index']}: still 'Loading widget…'")
            elif not o["widgets"]:
                problems.append(f"output {o['index']}: widget mime type but no controls: {text[:120]!r}")
        elif WIDGET_REPR.match(text) or WIDGET_PLACEHOLDER in text or "Loading widget" in text:
            problems.append(f"output {o['index']}: a widget shown as text, not controls: {text[:120]!r}")
    return widgets_, problems


# ------------------------------------------------------------ explorers

def explorers(page):
    """Locators of the widget outputs that hold an explorer (a slider or a dropdown next to an image)."""
    outs = page.locator(".jp-OutputArea-output").filter(has=page.locator(".jupyter-widgets"))
    found = []
    for i in range(outs.count()):
        o = outs.nth(i)
        if o.locator(".widget-slider, .widget-dropdown").count() and o.locator("img").count():
            found.append(o)
    return found


IMAGE_JS = """async (img) => {
  const r = await fetch(img.src);
  const b = new Uint8Array(await r.arrayBuffer());
  let s = '';
  for (let i = 0; i < b.length; i += 0x8000) s += String.fromCharCode.apply(null, b.subarray(i, i + 0x8000));
  return btoa(s);
}"""


def plot_bytes(explorer) -> bytes:
    """The bytes of the explorer's plot (the largest <img> in it: an ipywidgets Image or an output image)."""
    imgs = explorer.locator("img")
    best, area = None, -1
    for i in range(imgs.count()):
        box = imgs.nth(i).bounding_box() or {"width": 0, "height": 0}
        if box["width"] * box["height"] > area:
            best, area = imgs.nth(i), box["width"] * box["height"]
    return base64.b64decode(best.evaluate(IMAGE_JS))


def changed_fraction(before: bytes, after: bytes) -> float:
    """Share of pixels that differ between two PNGs of the same size."""
    import matplotlib.image as mpimg
    a, b = mpimg.imread(io.BytesIO(before), format="png"), mpimg.imread(io.BytesIO(after), format="png")
    if a.shape != b.shape:
        raise ValueError(f"the plot changed size: {a.shape[:2]} -> {b.shape[:2]}")
    diff = (abs(a - b) > 1e-6)
    return float(diff.any(axis=-1).mean() if diff.ndim == 3 else diff.mean())


def wait_plot_change(explorer, before: bytes, timeout: float = 20) -> bytes | None:
    """The new plot bytes once they differ from ``before``; None if they never do."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            now = plot_bytes(explorer)
        except Exception:  # the <img> is being replaced
            now = before
        if now != before:
            time.sleep(0.3)  # let a burst of updates finish, then read the final image
            return plot_bytes(explorer)
        time.sleep(0.2)
    return None


# ------------------------------------------------------------ layout

LAYOUT_JS = """(root) => {
  const out = [];
  const area = root.getBoundingClientRect();
  const name = (e) => {
    const w = e.closest('.widget-inline-hbox');
    const l = w && w.querySelector('.widget-label');
    return (l && l.textContent.trim()) || e.textContent.trim().slice(0, 40) || e.className;
  };
  const canvas = document.createElement('canvas').getContext('2d');
  for (const e of root.querySelectorAll('.widget-label, .widget-readout, .widget-label-basic, button, .widget-html-content')) {
    if (!e.offsetParent) continue;
    if (e.scrollWidth > e.clientWidth + 1)
      out.push(`${e.classList.contains('widget-readout') ? 'readout' : 'label'} of "${name(e)}" cut off: `
               + `text ${e.scrollWidth} px in a ${e.clientWidth} px box ("${e.textContent.trim()}")`);
  }
  for (const s of root.querySelectorAll('select')) {
    const st = getComputedStyle(s);
    canvas.font = `${st.fontStyle} ${st.fontWeight} ${st.fontSize} ${st.fontFamily}`;
    for (const o of s.options) {
      const need = canvas.measureText(o.text).width + parseFloat(st.paddingLeft) + parseFloat(st.paddingRight);
      if (need > s.clientWidth + 1)
        out.push(`dropdown "${name(s)}" option "${o.text}" cut off: needs ${Math.ceil(need)} px, box ${s.clientWidth} px`);
    }
  }
  for (const c of root.querySelectorAll('.widget-inline-hbox, .widget-image, img, .widget-box')) {
    if (!c.offsetParent) continue;
    const r = c.getBoundingClientRect();
    const parent = c.parentElement.closest('.widget-box') || root;
    const p = parent.getBoundingClientRect();
    // ipywidgets gives every widget a 2 px margin (--jp-widgets-margin): a widget of width
    // 100% ends that margin past its box by design, over blank padding.  Allow exactly that.
    const tol = parseFloat(getComputedStyle(c).marginLeft) + 1;
    if (r.right > p.right + tol || r.left < p.left - 1)
      out.push(`${c.className.split(' ').pop()} "${name(c)}" overflows its box: ${Math.round(r.left)}..`
               + `${Math.round(r.right)} px in a box ${Math.round(p.left)}..${Math.round(p.right)} px`);
    if (r.right > area.right + tol)
      out.push(`${c.className.split(' ').pop()} "${name(c)}" overflows the output area: right edge `
               + `${Math.round(r.right)} px > ${Math.round(area.right)} px`);
  }
  for (const c of root.querySelectorAll('.widget-slider .slider-container')) {
    if (c.offsetParent && c.clientWidth < 40)
      out.push(`slider "${name(c)}" squeezed to ${c.clientWidth} px`);
  }
  return Array.from(new Set(out));
}"""


def layout_problems(explorer) -> list[str]:
    return explorer.evaluate(LAYOUT_JS)


# ------------------------------------------------------------ exercises

def first_graded_exercise(exercise_nb: Path) -> tuple[int, str, str, list[str]] | None:
    """(cell index, function name, cell source, parameters) of the first stub with a check cell after it."""
    nb = json.loads(exercise_nb.read_text())
    cells = nb["cells"]
    for i, c in enumerate(cells):
        src = "".join(c["source"])
        if c["cell_type"] != "code" or "NotImplementedError" not in src:
            continue
        m = re.search(r"^def (\w+)\(([^)]*)\)", src, re.M)
        if not m:
            continue
        name = m.group(1)
        nxt = next((j for j in range(i + 1, len(cells)) if cells[j]["cell_type"] == "code"), None)
        if nxt is not None and re.search(rf"check\.\w+\(\s*{name}\b", "".join(cells[nxt]["source"])):
            params = [p.split("=")[0].split(":")[0].strip().lstrip("*") for p in m.group(2).split(",") if p.strip()]
            return i, name, src, params
    return None


def solution_body(solution_py: Path, name: str) -> str:
    """The lines between ### BEGIN/END SOLUTION in ``def name`` of a solutions/NN_*.py source."""
    text = solution_py.read_text()
    m = re.search(rf"^def {name}\(.*?### BEGIN SOLUTION[^\n]*\n(.*?)^[ \t]*### END SOLUTION", text, re.M | re.S)
    if not m:
        raise AssertionError(f"no solution region for {name} in {solution_py}")
    return m.group(1)


STUB = re.compile(r"^([ \t]*)# YOUR CODE HERE\n[ \t]*raise NotImplementedError\(\)[^\n]*\n?", re.M)


def with_body(stub_source: str, body: str) -> str:
    if not STUB.search(stub_source):
        raise AssertionError(f"no stub to replace in:\n{stub_source}")
    return STUB.sub(lambda m: body if body.endswith("\n") else body + "\n", stub_source, count=1)


def wrong_body(stub_source: str, params: list[str]) -> str:
    indent = STUB.search(stub_source).group(1)
    value = f"0 * {params[0]}" if params else "0"
    return f"{indent}return {value}  # a wrong answer, typed by the browser test\n"


IMAGES_STATE_JS = """(root) => Array.from(root.querySelectorAll('img')).map(
    i => `${i.src.slice(0, 30)}… complete=${i.complete} natural=${i.naturalWidth}x${i.naturalHeight}`)"""
