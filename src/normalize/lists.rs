//! An audience list's identity: a digest of the pair and the list's entries. A pair's polls mostly
//! repeat its previous lists, so the store keeps each distinct list of a pair once and a snapshot
//! names the list it saw (`migrations/0010_audience_lists.sql`, which computes the same bytes in
//! SQL for the lists stored before it).

use std::fmt::Write as _;

use sha2::{Digest, Sha256};

use super::AudienceRow;

/// The first 16 bytes of the SHA-256 of the encoded list: `audience_*_lists.list_id`.
pub type ListId = [u8; 16];

/// The list's id, or `None` for an empty list (a snapshot with no list names none).
///
/// Encoding (the migration's `audience_list_field`): NULL is `0x00`; a value is `0x01`, then for
/// text its UTF-8 length (u32, big-endian) and bytes, for a number its IEEE 754 bits
/// (big-endian). The list is the clip id and region, then per entry, in order, the position
/// (i16, big-endian), provider id, code, name and score.
#[must_use]
pub fn list_id(clip_id: &str, region: &str, list: &[AudienceRow]) -> Option<ListId> {
    if list.is_empty() {
        return None;
    }
    let mut h = Sha256::new();
    text(&mut h, Some(clip_id));
    text(&mut h, Some(region));
    for e in list {
        h.update(e.position.to_be_bytes());
        text(&mut h, e.provider_id.as_deref());
        text(&mut h, e.code.as_deref());
        text(&mut h, e.name.as_deref());
        match e.score {
            None => h.update([0]),
            Some(v) => {
                h.update([1]);
                h.update(v.to_be_bytes());
            }
        }
    }
    let mut id = [0; 16];
    id.copy_from_slice(&h.finalize()[..16]);
    Some(id)
}

/// The id as Postgres writes a `bytea` in hex: `\x` and two digits a byte.
#[must_use]
pub fn hex(id: &ListId) -> String {
    id.iter().fold(String::from("\\x"), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn text(h: &mut Sha256, t: Option<&str>) {
    match t {
        None => h.update([0]),
        Some(t) => {
            h.update([1]);
            // Lists are bounded (rules::MAX_AUDIENCE_ENTRIES) and their fields by the response size.
            h.update(u32::try_from(t.len()).unwrap_or(u32::MAX).to_be_bytes());
            h.update(t.as_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(position: i16, code: &str, score: Option<f64>) -> AudienceRow {
        AudienceRow {
            position,
            provider_id: None,
            code: Some(code.into()),
            name: Some("Latvia".into()),
            score,
        }
    }

    #[test]
    fn an_id_is_written_as_postgres_writes_bytea() {
        let mut id = [0; 16];
        id[0] = 0xab;
        id[15] = 1;
        assert_eq!(hex(&id), "\\xab000000000000000000000000000001");
    }

    #[test]
    fn an_empty_list_has_no_id() {
        assert_eq!(list_id("1", "US", &[]), None);
    }

    #[test]
    fn the_same_entries_of_the_same_pair_have_the_same_id_and_any_change_another() {
        let list = [entry(1, "LV", Some(3.0)), entry(2, "FR", None)];
        let id = list_id("1", "US", &list);
        assert_eq!(id, list_id("1", "US", &list.clone()));
        assert_ne!(id, list_id("1", "GB", &list), "another region");
        assert_ne!(id, list_id("12", "US", &list), "another clip");
        assert_ne!(id, list_id("1", "US", &list[..1]), "a shorter list");
        let mut scored = list.clone();
        scored[1].score = Some(0.0);
        assert_ne!(id, list_id("1", "US", &scored), "NULL is not 0");
        let mut moved = list.clone();
        moved[0].code = Some("L".into());
        moved[0].name = Some("VLatvia".into());
        assert_ne!(id, list_id("1", "US", &moved), "field bounds are encoded");
    }
}
