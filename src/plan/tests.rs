//! Planner tests: data in, plan out, through one `check` helper.
