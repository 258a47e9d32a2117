//! The GraphiQL page, served with its scripts from the binary itself (vendored in
//! `api/assets/graphiql`), so it works on machines and networks without a CDN.

use async_graphql::http::GraphiQLSource;
use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};

const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "graphiql.min.js",
        "text/javascript",
        include_bytes!("../assets/graphiql/graphiql.min.js"),
    ),
    (
        "graphiql.min.css",
        "text/css",
        include_bytes!("../assets/graphiql/graphiql.min.css"),
    ),
    (
        "react.production.min.js",
        "text/javascript",
        include_bytes!("../assets/graphiql/react.production.min.js"),
    ),
    (
        "react-dom.production.min.js",
        "text/javascript",
        include_bytes!("../assets/graphiql/react-dom.production.min.js"),
    ),
];

/// The GraphiQL page, pointing at `/graphql` and at the bundled assets.
pub fn page() -> Html<String> {
    let html = GraphiQLSource::build()
        .endpoint("/graphql")
        .title("parley GraphiQL")
        .finish()
        .replace(
            "https://unpkg.com/react@18/umd/react.development.js",
            "/graphql/assets/react.production.min.js",
        )
        .replace(
            "https://unpkg.com/react-dom@18/umd/react-dom.development.js",
            "/graphql/assets/react-dom.production.min.js",
        )
        .replace(
            "https://unpkg.com/graphiql@4/graphiql.min.css",
            "/graphql/assets/graphiql.min.css",
        )
        .replace(
            "https://unpkg.com/graphiql@4/graphiql.min.js",
            "/graphql/assets/graphiql.min.js",
        )
        .replace(
            r#"<link rel="icon" href="https://graphql.org/favicon.ico">"#,
            "",
        );
    Html(html)
}

/// One bundled asset, cacheable for a day.
pub async fn asset(Path(name): Path<String>) -> Response {
    match ASSETS.iter().find(|(n, _, _)| *n == name) {
        Some((_, mime, bytes)) => (
            [
                (header::CONTENT_TYPE, *mime),
                (header::CACHE_CONTROL, "public, max-age=86400"),
            ],
            *bytes,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no such asset").into_response(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_page_loads_nothing_from_outside() {
        let html = super::page().0;
        assert!(!html.contains("https://"), "{html}");
        for (name, _, _) in super::ASSETS {
            assert!(html.contains(&format!("/graphql/assets/{name}")), "{name}");
        }
    }
}
