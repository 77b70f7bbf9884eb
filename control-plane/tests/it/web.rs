//! The HTML surface's plumbing: static files from the binary with their cache headers, and the
//! security headers on every response of it.

use reqwest::header;
use reqwest::StatusCode;
use sqlx::PgPool;

use crate::helpers::TestApp;

#[sqlx::test(migrator = "control_plane::startup::MIGRATOR")]
async fn static_files_come_from_the_binary_with_cache_headers_and_the_policy(pool: PgPool) {
    let app = TestApp::spawn(pool).await;
    let versioned = control_plane::web::assets::url("crosscheck.css");
    let response = app.http.get(app.url(&versioned)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let headers = response.headers().clone();
    assert_eq!(headers[header::CONTENT_TYPE], "text/css; charset=utf-8");
    assert_eq!(headers[header::CACHE_CONTROL], "public, max-age=31536000, immutable");
    assert_eq!(headers[header::CONTENT_SECURITY_POLICY], control_plane::web::CSP);
    assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    let etag = headers[header::ETAG].to_str().unwrap().to_owned();
    assert!(response.text().await.unwrap().contains("--ok"));

    // Unversioned: a short cache; a revalidation with the ETag is a 304.
    let response = app.http.get(app.url("/static/crosscheck.css")).send().await.unwrap();
    assert_eq!(response.headers()[header::CACHE_CONTROL], "public, max-age=300");
    let response = app
        .http
        .get(app.url("/static/crosscheck.css"))
        .header(header::IF_NONE_MATCH, &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_MODIFIED);

    // Unknown files and paths are an HTML 404 under the same policy.
    for path in ["/static/nothing.js", "/static/..%2FCargo.toml"] {
        let response = app.http.get(app.url(path)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
        assert_eq!(response.headers()[header::CONTENT_SECURITY_POLICY], control_plane::web::CSP);
        assert!(response.headers()[header::CONTENT_TYPE].to_str().unwrap().starts_with("text/html"));
        assert!(response.text().await.unwrap().contains("Not found"));
    }
    app.stop().await;
}
