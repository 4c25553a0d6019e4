// Swagger UI over this service's own /openapi.json. Nothing is fetched from elsewhere:
// the validator badge (a request to validator.swagger.io) is off, and the page's
// Content-Security-Policy allows this origin only. "Authorize" takes a bearer token
// from AUTOFIX_API_TOKENS; it is kept in this page only.
window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  validatorUrl: null,
  deepLinking: true,
  persistAuthorization: false,
  tryItOutEnabled: false,
});
