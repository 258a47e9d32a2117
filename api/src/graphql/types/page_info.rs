//! Relay's `PageInfo`: where a page of a connection stands in its list.

use async_graphql::SimpleObject;
use service::query::Page;

/// Where a page stands in its list (Relay Cursor Connections spec).
#[derive(SimpleObject, Debug, Clone)]
pub struct PageInfo {
    /// More items follow this page. Exact when paging forward (`first`); when paging
    /// backward it is true when `before` was given.
    pub has_next_page: bool,
    /// More items precede this page. Exact when paging backward (`last`); when paging
    /// forward it is true when `after` was given.
    pub has_previous_page: bool,
    /// The cursor of the first item, to page backward from (`before`).
    pub start_cursor: Option<String>,
    /// The cursor of the last item, to page forward from (`after`).
    pub end_cursor: Option<String>,
}

/// The page info of `page`, each item's cursor made by `cursor`.
pub(crate) fn page_info<T>(page: &Page<T>, cursor: impl Fn(&T) -> String) -> PageInfo {
    PageInfo {
        has_next_page: page.has_next_page,
        has_previous_page: page.has_previous_page,
        start_cursor: page.items.first().map(&cursor),
        end_cursor: page.items.last().map(&cursor),
    }
}
