"""Sphinx configuration of the documentation site; `make docs` (scripts/docs.py) writes the pages into _proc/."""
import cascade_lab

project = "cascade-lab"
author = "cascade-lab developers"
release = version = cascade_lab.__version__
copyright = "2026, cascade-lab developers"

extensions = ["myst_nb"]
root_doc = "index"
exclude_patterns = ["**.ipynb_checkpoints"]
# markdown pages and notebooks; MyST-NB reads .md as MyST markdown too
source_suffix = {".md": "myst-nb", ".ipynb": "myst-nb"}

# Notebooks arrive executed (or with the committed outputs make test proves current): never run them here.
nb_execution_mode = "off"
nb_merge_streams = True
myst_heading_anchors = 3
myst_enable_extensions = ["colon_fence"]

html_theme = "furo"
html_title = "cascade-lab"
# docs/_static: the site's own scripts and styles; _build/vendor: the browser libraries scripts/docs.py vendored
html_static_path = ["_static", "_build/vendor"]
html_css_files = ["cascade.css"]
html_copy_source = False
html_show_sourcelink = False

# Nothing from a CDN: the page loads require.js, then our configuration (anywidget's AMD module and
# @jupyter-widgets from local files), then the html manager, which renders the stored widget state.
nb_ipywidgets_js = {
    "require.js": {},
    "cascade_widgets.js": {},
    # a module that is not vendored would be looked up here, on the site itself, and fail visibly
    "embed-amd.js": {"data-jupyter-widgets-cdn": "_static/not-vendored/"},
}
# MathJax only where a page has math, from the local copy
mathjax_path = "mathjax/tex-chtml.js"


def _plotly_assets(app, pagename, templatename, context, doctree):
    "plotly.js once per page, only on pages with a figure."
    if doctree is not None and "cascade-plotly" in context.get("body", ""):
        # before require.js: plotly.js seen after it would register as an anonymous AMD module, not window.Plotly
        app.add_js_file("plotly.min.js", priority=200)
        app.add_js_file("cascade_plotly.js", priority=201)


def setup(app):
    app.connect("html-page-context", _plotly_assets)
html_favicon = "_static/favicon.svg"
