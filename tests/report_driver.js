// Appended to a copy of the Snakemake report by tests/browser.py: clicks through
// the report as a reader would (menu -> forget set -> figure -> view button) and
// writes what it saw as JSON into a pre element (id klomflow-report-check) that
// --dump-dom prints.
(function () {
  const seen = [];
  const pause = () => new Promise((resolve) => setTimeout(resolve, 250));
  const link = (text) => Array.from(document.querySelectorAll("#app nav a"))
    .find((a) => a.textContent.trim() === text);
  async function click(element) {
    if (!element) { throw new Error("nothing to click"); }
    element.click();
    await pause();
  }
  async function run() {
    await pause();
    for (const category of Object.keys(categories).sort()) {
      for (const subcategory of Object.keys(categories[category]).sort()) {
        app.setView({ navbarMode: "menu" });  // back to the menu the report opens with
        await pause();
        await click(link(category));
        // A category with one subcategory opens on it (Snakemake's showCategory).
        if (Object.keys(categories[category]).length > 1) { await click(link(subcategory)); }
        const rows = Array.from(document.querySelectorAll("#app nav table tbody tr"));
        for (const row of rows) {
          await click(row.querySelector("a"));
          const image = document.querySelector("#app img[src^='data:image/png']");
          seen.push({
            category: category, subcategory: subcategory, row: row.textContent.trim(),
            image: image ? image.src : "", width: image ? image.naturalWidth : 0,
            captions: categories[category][subcategory].map((path) => results[path].caption),
          });
        }
      }
    }
    return seen;
  }
  function report(payload) {
    const out = document.createElement("pre");
    out.id = "klomflow-report-check";
    out.textContent = JSON.stringify(payload);
    document.body.appendChild(out);
  }
  run().then(report, (error) => report({ error: String(error) }));
})();
