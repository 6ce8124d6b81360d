// Swagger UI for this API, from this API alone: the spec is GET /api/openapi.json (beside
// this page, under the same stage), and "Try it out" calls the deployment serving the page.
// /api/docs is open; the spec and the routes keep their API key when the stack requires one,
// so the page asks for it, keeps it in this tab (sessionStorage) and authorizes Swagger UI with it.
"use strict";

const KEY_STORE = "comfy-serverless-api.x-api-key";
const SPEC_URL = "openapi.json"; // relative: /<stage>/api/docs -> /<stage>/api/openapi.json
// The base path of the deployment: "https://host/dev" for https://host/dev/api/docs.
const BASE_URL = new URL("..", window.location.href).href.replace(/\/$/, "");

const form = document.getElementById("api-key-form");
const keyInput = document.getElementById("api-key");
const errorLine = document.getElementById("docs-error");

function showError(message) {
  errorLine.textContent = message;
  errorLine.hidden = false;
}

async function fetchSpec(key) {
  const headers = { Accept: "application/json" };
  if (key) headers["x-api-key"] = key;
  return fetch(SPEC_URL, { headers, credentials: "omit" });
}

function askForKey(message) {
  if (message) showError(message);
  form.hidden = false;
  keyInput.focus();
}

function render(spec, key) {
  form.hidden = true;
  errorLine.hidden = true;
  // Only the deployment that serves this page: the spec's other servers are other origins.
  spec.servers = [{ url: BASE_URL, description: "This deployment (where these docs are served)" }];
  const ui = SwaggerUIBundle({
    spec,
    dom_id: "#swagger-ui",
    layout: "BaseLayout",
    deepLinking: true,
    displayRequestDuration: true,
    validatorUrl: null, // the default badge would ask validator.swagger.io
    onComplete: () => {
      if (key) ui.preauthorizeApiKey("api_key", key);
    },
  });
  window.ui = ui;
}

async function load(key) {
  let response;
  try {
    response = await fetchSpec(key);
  } catch (err) {
    showError(`Could not load ${SPEC_URL}: ${err}`);
    return;
  }
  if (response.status === 403) {
    sessionStorage.removeItem(KEY_STORE);
    askForKey(key ? "That key was refused (403)." : "");
    return;
  }
  if (!response.ok) {
    showError(`Could not load ${SPEC_URL}: HTTP ${response.status}`);
    return;
  }
  if (key) sessionStorage.setItem(KEY_STORE, key);
  render(await response.json(), key);
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  load(keyInput.value.trim());
});

load(sessionStorage.getItem(KEY_STORE) || "");
