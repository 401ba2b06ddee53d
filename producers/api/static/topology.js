// The service map: a layered drawing (services on top, what they depend on below) in SVG,
// each node coloured by its latest deployment and badged with its open alerts; a selected
// service highlights its blast radius (every service that depends on it).

const SVG = "http://www.w3.org/2000/svg";
const NODE_W = 170;
const NODE_H = 44;
const GAP_X = 30;
const GAP_Y = 70;

function el(name, attrs = {}, text = null) {
  const node = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  if (text !== null) node.textContent = text;
  return node;
}

/** Layer of each node id: 0 for services nothing shown depends on, dependencies below. */
export function layers(nodes) {
  const ids = new Set(nodes.map((n) => n.id));
  const layer = new Map(nodes.map((n) => [n.id, 0]));
  const edges = [];
  for (const n of nodes) {
    for (const dep of n.dependencies) {
      const target = `${n.tenant}/${dep}`;
      if (ids.has(target) && target !== n.id) edges.push([n.id, target]);
    }
  }
  // Longest path, bounded by the node count (a dependency cycle stops there).
  for (let round = 0; round < nodes.length; round++) {
    let changed = false;
    for (const [from, to] of edges) {
      const want = Math.min(layer.get(from) + 1, nodes.length);
      if (layer.get(to) < want) {
        layer.set(to, want);
        changed = true;
      }
    }
    if (!changed) break;
  }
  return { layer, edges };
}

/**
 * Draw `nodes` into `svg`. `stateOf(node)` gives {status, alerts}; `selected` is the id
 * whose blast radius is highlighted; `onSelect(id)` is called on a click.
 */
export function drawMap(svg, nodes, stateOf, selected, onSelect) {
  svg.replaceChildren();
  if (!nodes.length) {
    svg.setAttribute("viewBox", "0 0 400 60");
    svg.append(el("text", { x: 10, y: 30, class: "empty" }, "No services in the catalog yet."));
    return;
  }
  const { layer, edges } = layers(nodes);
  const rows = [];
  for (const n of nodes) {
    const index = layer.get(n.id);
    (rows[index] = rows[index] || []).push(n);
  }
  const at = new Map();
  const width = Math.max(...rows.filter(Boolean).map((r) => r.length)) * (NODE_W + GAP_X);
  rows.forEach((row, y) => {
    if (!row) return;
    row.sort((a, b) => a.id.localeCompare(b.id));
    const offset = (width - row.length * (NODE_W + GAP_X)) / 2;
    row.forEach((n, x) => {
      at.set(n.id, { x: offset + x * (NODE_W + GAP_X) + GAP_X / 2, y: 20 + y * (NODE_H + GAP_Y) });
    });
  });
  const height = 40 + rows.length * (NODE_H + GAP_Y);
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("width", width); // natural size: scaled down to fit, never up
  const defs = el("defs");
  const marker = el("marker", {
    id: "arrow", viewBox: "0 0 10 10", refX: 10, refY: 5, markerWidth: 7, markerHeight: 7,
    orient: "auto-start-reverse",
  });
  marker.append(el("path", { d: "M 0 0 L 10 5 L 0 10 z", class: "arrowhead" }));
  defs.append(marker);
  svg.append(defs);

  const chosen = nodes.find((n) => n.id === selected);
  const blast = new Set(chosen ? chosen.blast_radius.map((s) => `${chosen.tenant}/${s}`) : []);
  for (const [from, to] of edges) {
    const a = at.get(from);
    const b = at.get(to);
    const hot = blast.has(from) && (to === selected || blast.has(to));
    svg.append(el("line", {
      x1: a.x + NODE_W / 2, y1: a.y + NODE_H, x2: b.x + NODE_W / 2, y2: b.y,
      class: hot ? "edge hot" : "edge", "marker-end": "url(#arrow)",
    }));
  }
  for (const n of nodes) {
    const p = at.get(n.id);
    const state = stateOf(n);
    const classes = ["node", `status-${state.status || "none"}`];
    if (n.id === selected) classes.push("selected");
    if (blast.has(n.id)) classes.push("blast");
    const g = el("g", {
      class: classes.join(" "), transform: `translate(${p.x},${p.y})`, "data-id": n.id,
      tabindex: 0,
    });
    g.append(el("rect", { width: NODE_W, height: NODE_H, rx: 6 }));
    g.append(el("text", { x: 8, y: 18, class: "name" }, n.service));
    const detail = [n.owner_team || "no owner", state.status || "not deployed"].join(" · ");
    g.append(el("text", { x: 8, y: 34, class: "detail" }, detail));
    if (state.alerts) {
      g.append(el("circle", { cx: NODE_W - 6, cy: 6, r: 11, class: "badge" }));
      g.append(el("text", { x: NODE_W - 6, y: 10, class: "badge-text" }, String(state.alerts)));
    }
    g.addEventListener("click", () => onSelect(n.id));
    svg.append(g);
  }
}
