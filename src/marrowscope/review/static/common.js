// Shared by the cohort and slide pages: the server token and JSON requests.
"use strict";

const MS = (() => {
  const params = new URLSearchParams(location.search);
  if (params.get("token")) sessionStorage.setItem("marrowscope-token", params.get("token"));
  const token = sessionStorage.getItem("marrowscope-token") || "";

  async function api(method, url, body) {
    const opts = {method, headers: {}};
    if (method !== "GET") opts.headers["X-Token"] = token;
    if (body !== undefined) {
      opts.headers["Content-Type"] = "application/json";
      opts.body = JSON.stringify(body);
    }
    const r = await fetch(url, opts);
    let data = null;
    try { data = await r.json(); } catch (e) { data = null; }
    if (!r.ok) {
      const err = new Error((data && data.detail) || `${r.status} ${r.statusText}`);
      err.status = r.status;
      throw err;
    }
    return data;
  }

  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined) continue;
      if (k === "class") e.className = v;
      else if (k === "style") e.style.cssText = v;
      else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v);
    }
    for (const c of children) if (c !== null && c !== undefined) e.append(c);
    return e;
  }

  const pretty = (s) => s ? (s.charAt(0).toUpperCase() + s.slice(1)).replaceAll("_", " ") : "uncertain";
  const withToken = (url) => token ? `${url}?token=${encodeURIComponent(token)}` : url;
  return {api, el, pretty, token, withToken};
})();
