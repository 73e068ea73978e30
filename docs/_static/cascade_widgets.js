// Loaded after require.js and before the Jupyter widgets html manager (embed-amd.js), on pages with widgets:
// the html manager first asks require.js for a widget's module by name, so anywidget's front end (its AMD
// build, vendored from the anywidget pip package) is found here and never fetched from a CDN.
(function () {
  var here = document.currentScript.src.replace(/cascade_widgets\.js(\?.*)?$/, "");
  window.require.config({ paths: { anywidget: here + "anywidget/index" } });
})();
