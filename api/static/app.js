// Conductor 网页：只调用公开的 REST 接口，定时刷新；无需构建步骤。
"use strict";

const LIVE = ["PENDING", "RUNNING"];
const VIEWS = {
  queue: LIVE,
  history: ["COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL"],
  all: [],
};
const LOG_KEEP = 200000; // 日志尾部在页面里最多保留的字符数
let current = null; // 正在查看的作业 { id, offsets, state }

const $ = (sel) => document.querySelector(sel);

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

// 认证默认开启：令牌存在本浏览器的 localStorage。serve 启动时打印的一次性登录地址 /ui#login=…
// 让页面自己换到令牌；否则第一次 401 时询问
function withToken(options) {
  const token = localStorage.getItem("conductor-token");
  const opts = Object.assign({}, options || {});
  if (token) opts.headers = Object.assign({}, opts.headers || {}, { Authorization: `Bearer ${token}` });
  return opts;
}

// allow503：/health 在组件故障时以 503 返回正文，页面要显示它
async function api(path, options, allow503 = false) {
  let resp = await fetch(path, withToken(options));
  if (resp.status === 401) {
    const token = window.prompt(
      "需要 API 令牌（本机上见 ~/.config/conductor/token；或打开 serve 打印的一次性登录地址，" +
      "或由管理员用 conductor token create 创建）：");
    if (token) {
      localStorage.setItem("conductor-token", token.trim());
      resp = await fetch(path, withToken(options));
    }
  }
  if (!resp.ok && !(allow503 && resp.status === 503)) {
    let detail = resp.statusText;
    try { detail = (await resp.json()).detail || detail; } catch (_) { /* 非 JSON */ }
    throw new Error(`HTTP ${resp.status}：${detail}`);
  }
  return resp;
}

// 一次性登录：先把登录码从地址栏去掉（不留在历史记录里），再用它换令牌
async function loginFromHash() {
  const m = /^#login=([A-Za-z0-9_-]+)$/.exec(location.hash);
  if (!m) return;
  history.replaceState(null, "", location.pathname + location.search);
  const resp = await fetch("/auth/login", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ code: m[1] }),
  });
  if (resp.ok) {
    localStorage.setItem("conductor-token", (await resp.json()).token);
    return;
  }
  let detail = resp.statusText;
  try { detail = (await resp.json()).detail || detail; } catch (_) { /* 非 JSON */ }
  window.alert(`登录失败：${detail}`);
}

// 通用资源的空闲/总数：nvme 1/2 fpga 0/1
function gresText(gres) {
  return Object.entries(gres || {}).map(([k, g]) => `${k} ${g.available}/${g.total}`).join(" ");
}

function nodeBusy(n) {
  return n.allocated_cpus || n.allocated_gpus || Object.values(n.gres || {}).some((g) => g.allocated);
}

// 节点状态：排空中的写明原因与操作者（tooltip 里有开始时刻）
const NODE_STATES = { draining: "排空中（作业跑完即止）", drained: "已排空" };
function nodeStateText(n) {
  if (!n.available) return "不可用";
  if (NODE_STATES[n.state]) return `${NODE_STATES[n.state]}：${n.drain_reason}（${n.drained_by}）`;
  return nodeBusy(n) ? "使用中" : "空闲";
}

async function refreshCluster() {
  const dash = await (await api("/dashboard")).json();
  const r = dash.resource_stats;
  const nodes = dash.node_info;
  let summary =
    `CPU 已用 ${r.allocated_cpus} / 总数 ${r.total_cpus}（空闲 ${r.available_cpus}，使用率 ${(r.utilization_rate * 100).toFixed(0)}%）；`;
  if (r.total_gpus) summary += `GPU 已用 ${r.allocated_gpus} / 总数 ${r.total_gpus}（空闲 ${r.available_gpus}）；`;
  if (Object.keys(r.gres || {}).length) summary += `通用资源 空闲/总数 ${gresText(r.gres)}；`;
  $("#resource-summary").textContent =
    summary + `作业：运行 ${dash.job_stats.running}，排队 ${dash.job_stats.pending}，共 ${dash.job_stats.total}`;
  // GPU、通用资源与特性的列只在集群里有它们时显示（同 conductor info）
  const cols = [
    ["GPU 空闲 / 总数", nodes.some((n) => n.total_gpus), (n) => `${n.available_gpus} / ${n.total_gpus}`, "gpus"],
    ["通用资源 空闲 / 总数", nodes.some((n) => Object.keys(n.gres || {}).length), (n) => gresText(n.gres), "gres"],
    ["特性", nodes.some((n) => (n.features || []).length), (n) => (n.features || []).join(","), "features"],
  ].filter((c) => c[1]);
  const head = el("tr");
  for (const h of ["节点", "分区", "状态", "CPU 已用 / 总数", ...cols.map((c) => c[0]), "使用率"]) head.append(el("th", h));
  $("#nodes thead").replaceChildren(head);
  const body = $("#nodes tbody");
  body.replaceChildren();
  for (const n of nodes) {
    const tr = el("tr");
    tr.dataset.node = n.node_name;
    tr.append(el("td", n.node_name), el("td", n.partition),
      el("td", nodeStateText(n), n.drain_reason ? "drain" : undefined),
      el("td", `${n.allocated_cpus} / ${n.total_cpus}`));
    for (const [, , cell, cls] of cols) tr.append(el("td", cell(n), cls));
    tr.append(el("td", `${(n.utilization_rate * 100).toFixed(0)}%`));
    body.append(tr);
  }
  const health = await (await api("/health", undefined, true)).json();
  $("#health").textContent = health.status === "healthy" ? "服务正常" : `服务异常：${health.detail || ""}`;
  const link = $("#ray-dashboard");
  if (health.dashboard_url) {
    link.href = health.dashboard_url;
    link.textContent = `Ray 仪表盘：${health.dashboard_url}`;
  }
}

function jobsQuery() {
  const params = new URLSearchParams();
  for (const s of VIEWS[$("#f-view").value]) params.append("state", s);
  for (const [key, id] of [["account", "#f-account"], ["partition", "#f-partition"], ["name", "#f-name"]]) {
    const v = $(id).value.trim();
    if (v) params.set(key, v);
  }
  params.set("limit", "200");
  return params;
}

async function refreshJobs() {
  const data = await (await api("/jobs?" + jobsQuery())).json();
  const body = $("#jobs tbody");
  body.replaceChildren();
  for (const j of data.jobs) {
    const tr = el("tr");
    tr.id = `job-row-${j.job_id}`;
    tr.dataset.jobId = j.job_id;
    if (current && current.id === j.job_id) tr.classList.add("selected");
    tr.append(el("td", j.job_id), el("td", j.name), el("td", j.account), el("td", j.partition),
      el("td", j.state, `state st-${j.state}`), el("td", j.elapsed_time), el("td", j.allocated_cpus),
      el("td", j.node_list || j.state_reason || ""), el("td", j.exit_code || ""));
    const cell = el("td");
    if (LIVE.includes(j.state)) {
      const b = el("button", "取消", "danger cancel");
      b.dataset.jobId = j.job_id;
      b.addEventListener("click", (ev) => { ev.stopPropagation(); cancelJob(j.job_id); });
      cell.append(b);
    }
    tr.append(cell);
    tr.addEventListener("click", () => { location.hash = `job-${j.job_id}`; });
    body.append(tr);
  }
  $("#jobs-empty").hidden = data.jobs.length > 0;
}

async function cancelJob(id) {
  if (!window.confirm(`确定取消作业 ${id}？`)) return;
  try {
    const msg = (await (await api(`/jobs/cancel/${id}`, { method: "POST" })).json()).msg;
    if (current && current.id === id) $("#d-msg").textContent = msg;
  } catch (e) {
    $("#d-msg").textContent = `取消失败：${e.message}`;
  }
  await refresh();
}

function showDetailFromHash() {
  const m = /^#job-(\d+)$/.exec(location.hash);
  if (!m) { $("#detail").hidden = true; current = null; return; }
  const id = Number(m[1]);
  if (!current || current.id !== id) {
    current = { id, offsets: { stdout: 0, stderr: 0 }, state: null };
    $("#log-stdout").textContent = "";
    $("#log-stderr").textContent = "";
    $("#d-msg").textContent = "";
  }
  $("#detail").hidden = false;
  refreshDetail();
}

async function refreshDetail() {
  // 同一时刻只有一次刷新在读日志，避免同一偏移读两次而重复显示
  if (!current || current.busy) return;
  const job = current;
  job.busy = true;
  try {
    await loadDetail(job);
  } finally {
    job.busy = false;
  }
}

async function loadDetail(job) {
  const q = await (await api(`/jobs/query/${job.id}`)).json();
  if (current !== job) return;
  job.state = q.state;
  $("#d-id").textContent = `${q.job_id}（${q.detail.job_name}）`;
  const st = $("#d-state");
  st.textContent = q.state;
  st.className = `state st-${q.state}`;
  $("#d-cancel").disabled = !LIVE.includes(q.state);
  const fields = [
    ["账户 / 分区", `${q.detail.account} / ${q.detail.partition}`],
    ["CPU / 节点", `${q.detail.allocated_cpus} / ${q.detail.node_list || "—"}`],
    ["请求的资源", q.detail.tres_req_str || "—"],
    ["分配到的资源", q.detail.tres_alloc_str || "—"],
    ["提交", q.time.submit_time], ["开始", q.time.start_time || "—"], ["结束", q.time.end_time || "—"],
    ["已用 / 上限", `${q.time.elapsed_time} / ${q.time.limit_time}`],
    ["退出码", q.detail.exit_code || "—"], ["原因", q.error_msg || q.state_reason || "—"],
    ["工作目录", q.detail.work_dir],
  ];
  const dl = $("#d-fields");
  dl.replaceChildren();
  for (const [k, v] of fields) dl.append(el("dt", k), el("dd", v));
  for (const stream of ["stdout", "stderr"]) await tailLog(job, stream);
}

async function tailLog(job, stream) {
  // 按偏移增量读取：每次只取上次之后的新内容
  let resp;
  try {
    resp = await api(`/jobs/${job.id}/logs?stream=${stream}&offset=${job.offsets[stream]}`);
  } catch (e) {
    if (current === job) $("#d-msg").textContent = `无法读取日志：${e.message}`;
    return;
  }
  const text = await resp.text();
  if (current !== job) return;
  job.offsets[stream] = Number(resp.headers.get("X-Log-Offset") || job.offsets[stream]);
  if (text) {
    const pre = $(`#log-${stream}`);
    const follow = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
    pre.textContent = (pre.textContent + text).slice(-LOG_KEEP);
    if (follow) pre.scrollTop = pre.scrollHeight;
  }
}

async function refresh() {
  try {
    await Promise.all([refreshCluster(), refreshJobs(), refreshDetail()]);
  } catch (e) {
    $("#health").textContent = `刷新失败：${e.message}`;
  }
}

$("#filters").addEventListener("submit", (ev) => { ev.preventDefault(); refreshJobs(); });
$("#f-view").addEventListener("change", refreshJobs);
$("#d-cancel").addEventListener("click", () => current && cancelJob(current.id));
window.addEventListener("hashchange", showDetailFromHash);
(async () => {
  try {
    await loginFromHash();
  } catch (e) {
    window.alert(`登录失败：${e.message}`);
  }
  showDetailFromHash();
  refresh();
  setInterval(refresh, 1500);
})();
