//! The web page at `/`: a self-contained HTML file (no build step, no external assets) that
//! lists campaigns and shows one campaign's live frames, tick rate and `seq`.

use axum::response::Html;

pub async fn index() -> Html<&'static str> {
    Html(include_str!("page.html"))
}
