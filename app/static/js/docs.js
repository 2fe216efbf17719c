// Starts Swagger UI on /docs. A file of its own, not an inline script: the
// page runs under the same Content-Security-Policy as the dashboard.
const root = document.getElementById("swagger-ui");
if (root && window.SwaggerUIBundle) {
  window.SwaggerUIBundle({ url: root.dataset.spec, domNode: root, deepLinking: true });
}
