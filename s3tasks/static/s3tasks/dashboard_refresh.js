// The operations dashboard fetches its panels again every few seconds and swaps them in, so
// its numbers move without a reload. "Pause auto-refresh" stops it (remembered for the tab);
// a hidden tab is not refreshed. A failed fetch is said in the status line and tried again;
// a session that expired (the fetch lands on the login page) stops the refresh.
"use strict";
{
  const root = document.getElementById("s3tasks-dashboard");
  const panels = document.getElementById("s3tasks-dashboard-panels");
  const toggle = document.getElementById("s3tasks-refresh-toggle");
  const status = document.getElementById("s3tasks-refresh-status");
  const seconds = Number(root.dataset.refreshSeconds) || 10;
  const storageKey = "s3tasks.dashboard.paused";
  let paused = window.sessionStorage.getItem(storageKey) === "1";
  let stopped = false;

  const say = (text, failed) => {
    status.textContent = text;
    status.classList.toggle("failed", Boolean(failed));
  };
  const show = () => {
    toggle.textContent = paused ? toggle.dataset.resume : toggle.dataset.pause;
    toggle.setAttribute("aria-pressed", String(paused));
    say(paused ? status.dataset.paused : status.dataset.running);
  };

  toggle.addEventListener("click", () => {
    paused = !paused;
    window.sessionStorage.setItem(storageKey, paused ? "1" : "0");
    show();
  });

  const refresh = async () => {
    if (paused || stopped || document.hidden) {
      return;
    }
    try {
      const response = await fetch(root.dataset.panelsUrl, {
        credentials: "same-origin",
        headers: { "X-Requested-With": "XMLHttpRequest" },
      });
      if (response.redirected) {
        stopped = true;
        say(status.dataset.loggedOut, true);
        return;
      }
      if (!response.ok) {
        throw new Error(`HTTP ${response.status}`);
      }
      const html = await response.text();
      if (!paused) {
        panels.innerHTML = html;
        say(status.dataset.running);
      }
    } catch (error) {
      say(status.dataset.failed.replace("%s", error.message), true);
    }
  };

  show();
  window.setInterval(refresh, seconds * 1000);
}
