// Draws the page's plotly figures with its one local plotly.js: each figure is a div.cascade-plotly holding
// the figure's JSON (scripts/docs.py writes them from the notebooks' application/vnd.plotly.v1+json outputs).
(function () {
  function draw() {
    document.querySelectorAll("div.cascade-plotly").forEach(function (div) {
      if (div.dataset.drawn) return;
      div.dataset.drawn = "1";
      var fig = JSON.parse(div.querySelector('script[type="application/json"]').textContent);
      window.Plotly.newPlot(div, fig.data || [], fig.layout || {},
        Object.assign({ responsive: true, displaylogo: false }, fig.config || {}));
    });
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", draw);
  else draw();
})();
