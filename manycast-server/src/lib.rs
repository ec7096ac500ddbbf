//! manycast-server: filled by its own issue (see ISSUES in README).
