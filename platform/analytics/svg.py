"""Matplotlib figures as inline ``<svg>`` elements for HTML reports.

No XML prolog and no RDF metadata block (creator URL, date), text kept as text (searchable,
small), and every id prefixed with a digest of the figure itself, so several figures share
one page without clashing and the same figure gives the same bytes on every build.
"""

import hashlib
import io

import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

SVG_METADATA = {"Creator": None, "Date": None, "Format": None, "Type": None}


def inline_svg(figure: Figure) -> str:
    FigureCanvasAgg(figure)
    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "twoafc"}):
        figure.savefig(buffer, format="svg", bbox_inches="tight", metadata=SVG_METADATA)
    text = buffer.getvalue()
    text = text[text.index("<svg") :]
    prefix = "f" + hashlib.sha256(text.encode()).hexdigest()[:10]
    for marker in (' id="', "url(#", 'href="#'):
        text = text.replace(marker, f"{marker}{prefix}-")
    return text
