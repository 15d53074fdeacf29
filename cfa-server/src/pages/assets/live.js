// CareForAll donor pages: progressive enhancement only; every page works without this script.
// - a campaign page follows its totals stream and moves the total, the donors and the bar;
// - the thank-you page asks for its donation's progress until it is settled;
// - a submitted form disables its button (the idempotency key already makes a second
//   submission harmless; this only tells the donor the first one is on its way).
(function () {
  "use strict";

  // The same format as the server's Currency::display: "$1,234.50", "¥500", "CHF 12.00".
  function money(minor, exponent, symbol) {
    var negative = minor < 0;
    var digits = String(Math.abs(minor));
    var whole = digits, fraction = "";
    if (exponent > 0) {
      while (digits.length <= exponent) { digits = "0" + digits; }
      whole = digits.slice(0, digits.length - exponent);
      fraction = "." + digits.slice(digits.length - exponent);
    }
    whole = whole.replace(/\B(?=(\d{3})+(?!\d))/g, ",");
    return (negative ? "-" : "") + symbol + whole + fraction;
  }

  function followCampaign(root) {
    if (!window.EventSource) { return; }
    var exponent = parseInt(root.getAttribute("data-exponent"), 10) || 0;
    var symbol = root.getAttribute("data-symbol") || "";
    var source = new EventSource(root.getAttribute("data-stream"));
    source.addEventListener("totals", function (event) {
      var t = JSON.parse(event.data);
      var total = root.querySelector("[data-total]");
      var goal = root.querySelector("[data-goal]");
      var donors = root.querySelector("[data-donors]");
      var bar = root.querySelector("[data-percent]");
      if (total) { total.textContent = money(t.total_amount_minor, exponent, symbol); }
      if (goal) { goal.textContent = money(t.goal_amount_minor, exponent, symbol); }
      if (donors) { donors.textContent = t.unique_donors === 1 ? "1 donor" : t.unique_donors + " donors"; }
      if (bar && t.goal_amount_minor > 0) {
        var percent = Math.max(0, Math.min(100, Math.floor(t.total_amount_minor * 100 / t.goal_amount_minor)));
        bar.value = percent;
        bar.textContent = percent + "%";
      }
      root.setAttribute("data-updates", String((parseInt(root.getAttribute("data-updates"), 10) || 0) + 1));
    });
  }

  function followDonation(root) {
    var url = root.getAttribute("data-progress");
    function ask() {
      fetch(url, { headers: { "Accept": "application/json" }, cache: "no-store" })
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (p) {
          if (!p) { setTimeout(ask, 3000); return; }
          var fields = { "data-headline": p.headline, "data-detail": p.detail, "data-state": p.state };
          Object.keys(fields).forEach(function (name) {
            var el = root.querySelector("[" + name + "]");
            if (el && el.textContent !== fields[name]) { el.textContent = fields[name]; }
          });
          if (!p.settled) { setTimeout(ask, 1000); }
        })
        .catch(function () { setTimeout(ask, 3000); });
    }
    setTimeout(ask, 500);
  }

  function guardForms() {
    Array.prototype.forEach.call(document.querySelectorAll("form[method=post]"), function (form) {
      form.addEventListener("submit", function () {
        // Disabled after the submission took the pressed button's value.
        Array.prototype.forEach.call(form.querySelectorAll("button"), function (b) {
          setTimeout(function () { b.disabled = true; }, 0);
        });
      });
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    var campaign = document.querySelector("[data-stream]");
    if (campaign) { followCampaign(campaign); }
    var thanks = document.querySelector("[data-progress]");
    if (thanks) { followDonation(thanks); }
    guardForms();
    var errors = document.getElementById("errors");
    if (errors) { errors.focus(); }
  });
})();
