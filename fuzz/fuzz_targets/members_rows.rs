//! Fuzzes the decoding of mysqld's answers (vip_agent::mgr::query::decode) and what the
//! agent makes of them (vip_agent::mgr::classify): the variables row and up to a dozen
//! rows of replication_group_members, each cell any MySQL value (NULL, bytes that may
//! not be UTF-8, integers, floats, dates, times). Nothing panics, a view has at most 9
//! members, and every row that could not be read is named.
//!
//! The input is read with `arbitrary`: a row count, then per cell a kind and a value.

#![no_main]

use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use mysql_async::Value;
use vip_agent::mgr::{classify, query};

fn value(u: &mut Unstructured<'_>) -> Result<Value> {
    // Mostly the strings a real server sends; now and then anything else.
    Ok(match u.int_in_range(0..=9)? {
        0 => Value::NULL,
        1 => Value::Int(u.arbitrary()?),
        2 => Value::UInt(u.arbitrary()?),
        3 => Value::Float(u.arbitrary()?),
        4 => Value::Double(u.arbitrary()?),
        5 => Value::Date(
            u.arbitrary()?,
            u.arbitrary()?,
            u.arbitrary()?,
            u.arbitrary()?,
            u.arbitrary()?,
            u.arbitrary()?,
            u.arbitrary()?,
        ),
        6 => Value::Time(
            u.arbitrary()?,
            u.arbitrary()?,
            u.arbitrary()?,
            u.arbitrary()?,
            u.arbitrary()?,
            u.arbitrary()?,
        ),
        7 => Value::Bytes(
            (*u.choose(&[
                "ONLINE",
                "RECOVERING",
                "UNREACHABLE",
                "ERROR",
                "OFFLINE",
                "PRIMARY",
                "SECONDARY",
                "",
                "1",
                "0",
                "ON",
                "3306",
                "u1",
                "u2",
            ])?)
            .as_bytes()
            .to_vec(),
        ),
        _ => Value::Bytes(u.arbitrary()?),
    })
}

fn rows(u: &mut Unstructured<'_>, max: usize, cells: usize) -> Result<Vec<Vec<Value>>> {
    let n = u.int_in_range(0..=max)?;
    (0..n)
        .map(|_| {
            let width = u.int_in_range(0..=cells)?;
            (0..width).map(|_| value(u)).collect()
        })
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let (Ok(vars), Ok(members)) = (rows(&mut u, 2, 4), rows(&mut u, 12, 6)) else {
        return;
    };
    let Ok(view) = query::decode(&vars, &members) else {
        return;
    };
    assert!(view.members.len() <= query::MAX_MEMBERS);
    assert_eq!(view.members.len(), members.len());
    let unreadable = view
        .members
        .iter()
        .filter(|m| m.state.to_string() == query::UNREADABLE_ROW)
        .count();
    // Every row that could not be read stands for a member that is not reachable.
    assert!(view.bad_rows.len() <= unreadable);
    let status = classify(
        &view.server_uuid,
        view.single_primary,
        view.enforce_everywhere,
        &view.members,
    );
    let _ = status.to_string();
});
