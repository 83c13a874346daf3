// The dashboard's entry point: picks the page from the path, wires the header.

import { forgetToken, hasToken } from "./api.js";
import { h } from "./dom.js";
import { mountFlow, mountFlows } from "./flows.js";
import { mountRun } from "./run.js";
import { mountRuns } from "./runs.js";

const root = document.getElementById("app");
const controller = new AbortController();
window.addEventListener("pagehide", () => controller.abort());
const signal = controller.signal;

function route() {
  const path = location.pathname.replace(/\/+$/, "");
  let m;
  if ((m = path.match(/^\/ui\/runs\/([^/]+)$/))) {
    const id = decodeURIComponent(m[1]);
    document.title = `Run ${id} · flowrt`;
    return { nav: "runs", mount: () => mountRun(root, id, { signal }) };
  }
  if ((m = path.match(/^\/ui\/flows\/(.+)$/))) { // an id may hold a slash (the server's route takes the rest of the path)
    const id = decodeURIComponent(m[1]);
    document.title = `Flow ${id} · flowrt`;
    return { nav: "flows", mount: () => mountFlow(root, id, { signal }) };
  }
  if (path === "/ui/flows") {
    document.title = "Flows · flowrt";
    return { nav: "flows", mount: () => mountFlows(root, { signal }) };
  }
  document.title = "Runs · flowrt";
  return {
    nav: "runs",
    mount: () => {
      const list = h("div");
      root.replaceChildren(h("h1", {}, "Runs"), list);
      return mountRuns(list, { signal });
    },
  };
}

const page = route();
for (const link of document.querySelectorAll("[data-nav]")) link.classList.toggle("active", link.dataset.nav === page.nav);
const forget = document.getElementById("forget-token");
forget.hidden = !hasToken();
forget.addEventListener("click", () => {
  forgetToken();
  location.reload();
});
page.mount().finally(() => {
  forget.hidden = !hasToken();
});
