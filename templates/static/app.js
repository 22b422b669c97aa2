// The member center's script: reads Telegram's init data, asks the server for each page with
// it (the server renders the page only after checking it), and wires the page's buttons.
// No build step, no framework.
(function () {
  "use strict";
  var tg = window.Telegram && window.Telegram.WebApp;
  var initData = tg && tg.initData ? tg.initData : "";
  var main = document.getElementById("content");
  var toastTimer = null;
  var rotateTimer = null;

  var THEME = {
    bg_color: "--bg", text_color: "--text", hint_color: "--hint", link_color: "--link",
    button_color: "--button", button_text_color: "--button-text",
    secondary_bg_color: "--card", accent_text_color: "--accent"
  };

  function applyTheme() {
    if (!tg) return;
    var root = document.documentElement;
    root.dataset.theme = tg.colorScheme === "dark" ? "dark" : "light";
    var params = tg.themeParams || {};
    Object.keys(THEME).forEach(function (key) {
      if (params[key]) root.style.setProperty(THEME[key], params[key]);
    });
  }

  function api(path, options) {
    options = options || {};
    var headers = { "Authorization": "tma " + initData };
    if (options.body !== undefined) headers["Content-Type"] = "application/json";
    return fetch(path, {
      method: options.method || "GET", headers: headers,
      body: options.body !== undefined ? JSON.stringify(options.body) : undefined
    });
  }

  function toast(html) {
    var box = document.getElementById("toast");
    box.innerHTML = html;  // server-rendered from the templates, values escaped there
    box.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(function () { box.hidden = true; }, 4000);
  }

  function outside() {
    main.innerHTML = "";
    document.getElementById("outside").hidden = false;
  }

  async function failed(response) {
    if (response.status === 401) { outside(); return; }
    try { toast((await response.json()).message); } catch (e) { /* no words to show */ }
  }

  function pageUrl(page, query) {
    if (page === "admin") return "/app/api/admin/page" + (query || "");
    if (page === "campaigns") return "/app/api/admin/campaigns";
    return "/app/api/pages/" + page;
  }

  async function load(page, options) {
    options = options || {};
    var query = options.query !== undefined ? options.query : location.search;
    var response = await api(pageUrl(page, query));
    if (!response.ok) { await failed(response); return; }
    main.innerHTML = await response.text();
    main.dataset.page = page;
    if (options.push) history.pushState({ page: page }, "", "/app/" + page + (query || ""));
    wire(page);
    window.scrollTo(0, 0);
    document.dispatchEvent(new CustomEvent("page-ready", { detail: page }));
  }

  function wire(page) {
    clearInterval(rotateTimer);
    main.querySelectorAll("[data-nav]").forEach(function (link) {
      link.addEventListener("click", function (event) {
        event.preventDefault();
        var period = link.dataset.period;
        load(link.dataset.nav, { push: true, query: period ? "?period=" + period : "" });
      });
    });
    main.querySelectorAll("dialog [data-close]").forEach(function (button) {
      button.addEventListener("click", function () { button.closest("dialog").close(); });
    });
    if (page === "card") wireCard();
    if (page === "points") wireHistory();
    if (page === "rewards") wireRewards();
    if (page === "coupons") wireCoupons();
    if (page === "checkin") wireCheckin();
    if (page === "profile") wireProfile();
    if (page === "invite") wireInvite();
    if (page === "admin") wireCharts();
  }

  function wireCard() {
    var box = document.getElementById("card-qr");
    if (!box || !box.dataset.rotating) return;
    // The code is valid a minute: a fresh one every half minute keeps the shown one valid.
    var every = Math.max(10, Number(box.dataset.rotating) / 2) * 1000;
    rotateTimer = setInterval(async function () {
      var response = await api("/app/api/card/code");
      if (response.ok) box.innerHTML = (await response.json()).qr_svg;
    }, every);
  }

  function wireHistory() {
    var more = document.getElementById("more");
    var list = document.getElementById("history");
    if (!more || !list) return;
    var busy = false;
    var observer = new IntersectionObserver(async function (entries) {
      if (busy || !entries.some(function (e) { return e.isIntersecting; })) return;
      busy = true;
      var response = await api("/app/api/points/history?page=" + more.dataset.nextPage);
      busy = false;
      if (!response.ok) { observer.disconnect(); await failed(response); return; }
      var page = await response.json();
      page.lines.forEach(function (line) {
        var item = document.createElement("li");
        item.className = line.gain ? "gain" : "loss";
        var amount = document.createElement("span");
        amount.className = "amount"; amount.textContent = line.amount;
        var cause = document.createElement("span");
        cause.className = "cause"; cause.innerHTML = line.cause;  // escaped by the template
        var day = document.createElement("span");
        day.className = "day"; day.textContent = line.day;
        item.append(amount, cause, day);
        list.append(item);
      });
      if (page.next_page === null) { observer.disconnect(); more.remove(); }
      else more.dataset.nextPage = page.next_page;
    });
    observer.observe(more);
  }

  function wireRewards() {
    var dialog = document.getElementById("confirm");
    var chosen = null;
    main.querySelectorAll("[data-redeem]").forEach(function (button) {
      button.addEventListener("click", async function () {
        var key = button.dataset.redeem;
        var response = await api("/app/api/rewards/" + key + "/confirmation");
        if (!response.ok) { await failed(response); return; }
        var asked = await response.json();
        chosen = { key: key, token: asked.token };
        dialog.querySelector(".question").innerHTML = asked.question;
        dialog.showModal();
      });
    });
    dialog.querySelector("[data-confirm]").addEventListener("click", async function (event) {
      var button = event.currentTarget;
      if (!chosen || button.disabled) return;
      button.disabled = true;  // one press, one redemption (the token also makes sure)
      var response = await api("/app/api/rewards/" + chosen.key + "/redemptions",
        { method: "POST", body: { token: chosen.token } });
      button.disabled = false;
      dialog.close();
      if (!response.ok) { await failed(response); return; }
      var done = await response.json();
      await load("coupons", { push: true, query: "" });
      toast(done.message);
      openCoupon(done.coupon_id);
    });
  }

  async function openCoupon(id) {
    var dialog = document.getElementById("coupon-qr");
    var response = await api("/app/api/coupons/" + id);
    if (!response.ok) { await failed(response); return; }
    var coupon = await response.json();
    dialog.querySelector(".qr").innerHTML = coupon.qr_svg;
    dialog.querySelector(".worth").textContent = coupon.worth;
    dialog.querySelector(".code").textContent = coupon.code;
    dialog.querySelector(".until").textContent = coupon.valid_until;
    dialog.showModal();
  }

  function wireCoupons() {
    main.querySelectorAll("[data-coupon]").forEach(function (button) {
      button.addEventListener("click", function () { openCoupon(button.dataset.coupon); });
    });
  }

  async function act(path, body, page) {
    var response = await api(path, { method: "POST", body: body });
    if (!response.ok) { await failed(response); return; }
    var done = await response.json();
    await load(page, { query: "" });
    toast(done.message);
  }

  function wireCheckin() {
    var button = main.querySelector("[data-action=checkin]");
    if (button) button.addEventListener("click", function () {
      button.disabled = true;
      act("/app/api/checkin", undefined, "checkin");
    });
  }

  function wireProfile() {
    var form = document.getElementById("birthday-form");
    if (form) {
      var month = form.elements.month, day = form.elements.day, year = form.elements.year;
      // Only the days the month has (29 February unless a common year is chosen).
      var fitDays = function () {
        var last = new Date(Number(year.value) || 2000, Number(month.value) || 1, 0).getDate();
        if (!month.value) last = 31;
        Array.prototype.forEach.call(day.options, function (option) {
          option.disabled = option.hidden = option.value !== "" && Number(option.value) > last;
        });
        if (Number(day.value) > last) day.value = "";
      };
      month.addEventListener("change", fitDays);
      year.addEventListener("change", fitDays);
      form.addEventListener("submit", function (event) {
        event.preventDefault();
        if (!month.value || !day.value) return;
        var body = { month: Number(month.value), day: Number(day.value) };
        if (year.value) body.year = Number(year.value);
        form.querySelector("button").disabled = true;
        act("/app/api/profile/birthday", body, "profile");
      });
    }
    var marketing = main.querySelector("[data-action=marketing]");
    if (marketing) marketing.addEventListener("change", function () {
      act("/app/api/profile/marketing", { on: marketing.checked }, "profile");
    });
    main.querySelectorAll("[data-language]").forEach(function (button) {
      button.addEventListener("click", function () {
        act("/app/api/profile/language", { language: button.dataset.language }, "profile");
      });
    });
  }

  function wireInvite() {
    var button = main.querySelector("[data-share]");
    if (button) button.addEventListener("click", function () {
      if (tg && tg.openTelegramLink) tg.openTelegramLink(button.dataset.share);
      else window.open(button.dataset.share, "_blank");
    });
  }

  function wireCharts() {
    main.querySelectorAll("img[data-chart]").forEach(async function (image) {
      var response = await api(image.dataset.chart);
      if (response.ok) image.src = URL.createObjectURL(await response.blob());
    });
  }

  window.addEventListener("popstate", function () {
    var page = location.pathname.replace(/^\/app\/?/, "") || "card";
    load(page, { query: location.search });
  });

  if (!initData) { outside(); return; }
  if (tg.ready) tg.ready();
  if (tg.expand) tg.expand();
  applyTheme();
  if (tg.onEvent) tg.onEvent("themeChanged", applyTheme);
  load(main.dataset.page);
})();
