//! dns-keystore: filled by its own issue (see ISSUES in README).
