"""
The `nanoocr serve` page in a real browser: Debian's chromium, headless, driven by playwright
(its Python package only: the system browser, never a downloaded one). An image goes in through
the file input, drag-and-drop and paste; the text that streams onto the page must be exactly what
`nanoocr read` prints for the same image, mode, prompt and max tokens; Copy and Download must
hand over that same text.
"""

import base64
import os
import shutil

import pytest
from PIL import Image, ImageDraw, ImageFont
from playwright.sync_api import sync_playwright
from serve_fixtures import (
    WORDS,
    make_checkpoint,
    read_output,
    read_records,
    server_process,
    text_image,
)

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CAP = 24  # --max_tokens_cap, which the page shows as its default max tokens

pytestmark = [pytest.mark.skipif(not os.path.exists(CHROMIUM),
                                 reason="needs Debian's chromium: apt-get install -y chromium"),
              pytest.mark.usefixtures("one_thread")]


def wait_done(page, timeout_ms=60_000):
    """Wait for the page to finish reading; the status line says done or why not."""
    page.wait_for_function("['done', 'error', 'stopped'].includes(document.getElementById('status').dataset.state)",
                           timeout=timeout_ms)
    status = page.eval_on_selector("#status", "e => [e.dataset.state, e.textContent]")
    assert status[0] == "done", f"the page did not finish reading: {status[1]}"
    return page.eval_on_selector("#output", "e => [e.textContent, e.dataset.fixed || '', Number(e.dataset.events)]")


# A File built in the page from base64, delivered the way a drop or a paste delivers it
DISPATCH = """([kind, b64, name]) => {
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  const data = new DataTransfer();
  data.items.add(new File([bytes], name, { type: "image/png" }));
  const event = kind === "drop"
    ? new DragEvent("drop", { dataTransfer: data, bubbles: true, cancelable: true })
    : new ClipboardEvent("paste", { clipboardData: data, bubbles: true, cancelable: true });
  (kind === "drop" ? document.getElementById("drop") : document).dispatchEvent(event);
}"""


@pytest.mark.slow  # kept out of the quick loop (CONTRIBUTING.md): the full suite runs it
def test_page_streams_the_same_text_as_nanoocr_read(tmp_path):
    ckpt = make_checkpoint(tmp_path)
    images = []
    for i, words in enumerate(WORDS[:3]):
        images.append(tmp_path / f"img{i}.png")
        text_image(words, size=(256 + 32 * i, 48)).save(images[-1])
    expected = [read_output(ckpt, images[0], "--max_tokens", str(CAP)),
                read_output(ckpt, images[1], "--max_tokens", str(CAP)),
                read_output(ckpt, images[2], "--mode", "tiny", "--prompt", "OCR this image.", "--max_tokens", "9")]
    para = tmp_path / "para.png"  # two lines: read cuts them apart and boxes each
    im = Image.new("RGB", (300, 110), "white")
    for i, line in enumerate(WORDS[:2]):
        ImageDraw.Draw(im).text((10, 10 + 45 * i), line, fill="black", font=ImageFont.load_default(size=24))
    im.save(para)
    rec, = read_records(ckpt, para, "--max_tokens", str(CAP))

    with server_process(ckpt, tmp_path / "server.log", "--max_tokens_cap", str(CAP)) as (_, url), \
            sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            context = browser.new_context(accept_downloads=True)
            context.grant_permissions(["clipboard-read", "clipboard-write"], origin=url)
            page = context.new_page()
            page.set_default_timeout(60_000)
            page.goto(url)
            page.wait_for_function("document.querySelectorAll('#mode option').length > 1")  # /health read
            assert page.input_value("#max-tokens") == str(CAP) and page.input_value("#prompt") == "Free OCR."

            # 1. the file input, with the page's defaults (the model's mode, "Free OCR.", max tokens)
            page.set_input_files("#file", str(images[0]))
            text, fixed, events = wait_done(page)
            assert text == expected[0]
            assert fixed == "" and events > 1  # it arrived in pieces that added up, not in one final lump
            # Copy and Download hand over exactly that text
            page.click("#copy")
            assert page.evaluate("navigator.clipboard.readText()") == text
            with page.expect_download() as download:
                page.click("#download")
            assert download.value.suggested_filename == "img0.txt"
            with open(download.value.path(), "rb") as f:  # bytes: text mode would turn a \r into \n
                assert f.read().decode("utf-8") == text

            # 2. drag-and-drop
            page.evaluate(DISPATCH, ["drop", base64.b64encode(images[1].read_bytes()).decode(), "img1.png"])
            text, fixed, _ = wait_done(page)
            assert text == expected[1] and fixed == ""

            # 3. paste, with another mode, prompt and max tokens chosen on the page
            page.select_option("#mode", "tiny")
            page.fill("#prompt", "OCR this image.")
            page.fill("#max-tokens", "9")
            page.evaluate(DISPATCH, ["paste", base64.b64encode(images[2].read_bytes()).decode(), "img2.png"])
            text, fixed, _ = wait_done(page)
            assert text == expected[2] and fixed == ""
            assert expected[2] != expected[1]  # the choices reached the server

            # 4. the line boxes drawn over the image: one rectangle per line `read` finds, at its box
            #    in the image's pixels, and on the screen inside the image shown
            page.select_option("#mode", "")
            page.fill("#prompt", "Free OCR.")
            page.fill("#max-tokens", str(CAP))
            page.set_input_files("#file", str(para))
            text, _, _ = wait_done(page)
            assert text == rec["text"]
            page.wait_for_function("document.getElementById('boxes').dataset.count !== undefined")
            rects = page.eval_on_selector_all("#boxes rect", """rs => rs.map(r => {
                const b = r.getBoundingClientRect();
                return [[+r.getAttribute('x'), +r.getAttribute('y'), +r.getAttribute('x') + +r.getAttribute('width'),
                         +r.getAttribute('y') + +r.getAttribute('height')], [b.left, b.top, b.right, b.bottom],
                        r.querySelector('title').textContent]; })""")
            assert [r[0] for r in rects] == [line["box"] for line in rec["lines"]] and len(rects) == 2
            img = page.eval_on_selector("#drop img", "e => { const b = e.getBoundingClientRect(); "
                                                     "return [b.left, b.top, b.right, b.bottom, e.naturalWidth]; }")
            scale = (img[2] - img[0]) / img[4]
            for (l, t, r, b), (sl, st, sr, sb), title in rects:
                assert img[0] - 1 <= sl <= sr <= img[2] + 1 and img[1] - 1 <= st <= sb <= img[3] + 1
                assert abs(sl - (img[0] + l * scale)) < 2 and abs(sb - (img[1] + b * scale)) < 2
                assert "confidence" in title
        finally:
            browser.close()


def test_page_asks_for_the_api_key_once_and_sends_it(tmp_path):
    """A server started with --api_key: the page's first upload hears 401, asks for the key (a
    dialog), keeps it for the tab, and the next upload reads with it."""
    ckpt = make_checkpoint(tmp_path)
    image = tmp_path / "img.png"
    text_image(WORDS[0]).save(image)
    expected = read_output(ckpt, image, "--max_tokens", str(CAP))
    with server_process(ckpt, tmp_path / "server.log", "--max_tokens_cap", str(CAP), "--api_key", "s3cret") as (_, url), \
            sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            page = browser.new_page()
            page.set_default_timeout(60_000)
            asked = []
            page.on("dialog", lambda d: (asked.append(d.message), d.accept("s3cret")))
            page.goto(url)
            page.wait_for_function("document.querySelectorAll('#mode option').length > 1")  # /health is open
            page.set_input_files("#file", str(image))
            page.wait_for_function("document.getElementById('status').dataset.state === 'error'")
            assert asked == ["This server needs an API key:"]
            assert "API key saved" in page.text_content("#status")
            page.set_input_files("#file", [])
            page.set_input_files("#file", str(image))
            text, _, _ = wait_done(page)
            assert text == expected and len(asked) == 1
        finally:
            browser.close()
