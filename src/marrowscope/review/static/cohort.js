// The cohort page: one row per slide with its review status.
"use strict";

(async () => {
  const {api, el} = MS;
  const body = document.querySelector("#slides tbody");
  try {
    const slides = await api("GET", "/api/slides");
    for (const s of slides) {
      const ci = s.blast_ci ? `${s.blast_ci[0].toFixed(1)}–${s.blast_ci[1].toFixed(1)} %` : "";
      body.append(el("tr", {"data-id": s.id},
        el("td", {}, el("a", {href: MS.withToken(`/slide/${encodeURIComponent(s.id)}`)}, s.slide_id)),
        el("td", {}, el("span", {class: `status ${s.status.replace(" ", "-")}`}, s.status)),
        el("td", {}, s.suggestion || "–"), el("td", {}, s.rule_baseline || "–"),
        el("td", {}, s.blast_pct === null ? "–" : `${s.blast_pct.toFixed(1)} %`), el("td", {}, ci),
        el("td", {}, s.n_counted === null ? "–" : `${s.n_counted}${s.target ? " / " + s.target : ""}`),
        el("td", {}, s.reviewer || ""), el("td", {}, s.at ? s.at.replace("T", " ").slice(0, 19) : ""),
      ));
    }
  } catch (e) {
    document.getElementById("message").textContent = `Could not load the slides: ${e.message}`;
  }
})();
