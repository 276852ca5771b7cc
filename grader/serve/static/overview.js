// Overview filters: by name (substring) and by status; counts the rows shown.
(function () {
  const name = document.getElementById("filter-name"), status = document.getElementById("filter-status");
  const assignment = document.getElementById("filter-assignment");
  const rows = Array.from(document.querySelectorAll("#students tbody tr"));
  const count = document.getElementById("shown-count");
  function apply() {
    const text = name.value.trim().toLowerCase(), st = status.value, as = assignment.value;
    let shown = 0;
    for (const r of rows) {
      const ok = r.dataset.student.toLowerCase().includes(text) && (!st || r.dataset.status === st)
        && (!as || r.dataset.assignment === as);
      r.hidden = !ok; shown += ok;
    }
    count.textContent = shown + " of " + rows.length + " shown";
  }
  name.addEventListener("input", apply); status.addEventListener("change", apply);
  assignment.addEventListener("change", apply); apply();
})();
