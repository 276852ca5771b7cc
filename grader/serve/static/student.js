// A student's page: the report frame takes the height of the report (no inner scroll bar). The frame is
// same-origin without scripts (sandbox="allow-same-origin"), so this page can measure what it holds.
(function () {
  "use strict";
  const frame = document.getElementById("report-frame");
  if (!frame) return;
  function fit() {
    const doc = frame.contentDocument;
    if (!doc || !doc.documentElement) return;
    frame.style.height = "0px";  // measure the content, not the frame's previous height
    frame.style.height = Math.max(doc.documentElement.scrollHeight, doc.body ? doc.body.scrollHeight : 0) + "px";
  }
  frame.addEventListener("load", () => {
    fit();
    // figures load after the page: fit again as each arrives
    frame.contentDocument.querySelectorAll("img").forEach((img) => { if (!img.complete) img.addEventListener("load", fit); });
  });
  let pending = null;
  window.addEventListener("resize", () => { clearTimeout(pending); pending = setTimeout(fit, 100); });
  const doc = frame.contentDocument;  // loaded before this script ran
  if (doc && doc.URL !== "about:blank" && doc.readyState === "complete") fit();
})();
