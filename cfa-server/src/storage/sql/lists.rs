//! Statements over a list of values (`… IN (…)`, multi-row `VALUES`), split into chunks so that
//! no statement binds more values than SQLite allows; compiled once per backend.

use sqlx::QueryBuilder;

use super::Db;

/// Values of a list per statement: with up to a dozen columns a row, well under SQLite's
/// 32,766 bound values.
pub(super) const PER_STATEMENT: usize = 1000;

/// Appends `(v1, v2, …)` to `query`, binding each value.
pub(super) fn push_list<'t, T>(query: &mut QueryBuilder<Db>, values: impl IntoIterator<Item = T>)
where
    T: sqlx::Encode<'t, Db> + sqlx::Type<Db>,
{
    query.push("(");
    let mut list = query.separated(", ");
    for value in values {
        list.push_bind(value);
    }
    query.push(")");
}

/// `ids` without repeats, in the order rows are locked in (by id): two transactions locking
/// overlapping sets never wait for each other in a circle.
pub(super) fn in_lock_order(ids: &[uuid::Uuid]) -> Vec<uuid::Uuid> {
    let mut ids = ids.to_vec();
    ids.sort_unstable();
    ids.dedup();
    ids
}
