// novita-lifecycle dashboard: confirmations and live updates from the event stream.
// Loaded from this origin only (the Content-Security-Policy forbids inline script).
"use strict";

document.addEventListener("submit", (event) => {
  const form = event.target;
  if (form instanceof HTMLFormElement && form.dataset.confirm) {
    if (!window.confirm(form.dataset.confirm)) event.preventDefault();
  }
});

function setBadge(badge, status) {
  badge.textContent = status;
  badge.className = "badge status-" + status;
}

function appendToTimeline(table, event) {
  const body = table.tBodies[0];
  if (body.querySelector('tr[data-seq="' + event.sequence + '"]')) return;
  const row = body.insertRow(-1);
  row.dataset.seq = String(event.sequence);
  const change = event.toStatus
    ? (event.fromStatus || "\u2205") + " \u2192 " + event.toStatus
    : event.kind;
  for (const text of [event.sequence, event.at, event.source, change, event.reason || ""]) {
    row.insertCell(-1).textContent = String(text);
  }
}

function follow(indicator) {
  const source = new EventSource(indicator.dataset.stream);
  source.addEventListener("open", () => {
    indicator.className = "live connected";
    indicator.textContent = "live";
  });
  source.addEventListener("error", () => {
    indicator.className = "live reconnecting";
    indicator.textContent = "reconnecting";
  });
  source.addEventListener("instance-event", (message) => {
    const event = JSON.parse(message.data);
    if (event.toStatus) {
      for (const badge of document.querySelectorAll("[data-status-for]")) {
        if (badge.dataset.statusFor === event.instanceId) setBadge(badge, event.toStatus);
      }
    }
    for (const table of document.querySelectorAll("[data-timeline]")) {
      if (table.dataset.timeline === event.instanceId) appendToTimeline(table, event);
    }
  });
}

document.addEventListener("DOMContentLoaded", () => {
  for (const indicator of document.querySelectorAll("[data-stream]")) follow(indicator);
});
