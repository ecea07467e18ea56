//! The identifiers soundtrend works with, parsed once at the edge so the rest of the code can
//! rely on them.

use std::fmt;
use std::str::FromStr;

/// A `TikTok` music clip id: decimal digits only.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClipId(String);

impl ClipId {
    pub fn parse(raw: &str) -> Result<Self, DomainError> {
        let s = raw.trim();
        if s.is_empty() || s.len() > 32 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(DomainError::ClipId(raw.to_owned()));
        }
        Ok(Self(s.to_owned()))
    }

    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An ISO 3166-1 alpha-2 region code, stored upper case (`us` is accepted as `US`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Region(String);

impl Region {
    pub fn parse(raw: &str) -> Result<Self, DomainError> {
        let s = raw.trim().to_ascii_uppercase();
        if !ISO_3166_ALPHA2.contains(&s.as_str()) {
            return Err(DomainError::Region(raw.to_owned()));
        }
        Ok(Self(s))
    }

    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The trend window the provider is asked for, in days.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Period {
    Days7,
    Days30,
    Days120,
}

impl Period {
    pub const ALL: [Period; 3] = [Period::Days7, Period::Days30, Period::Days120];

    pub fn from_days(days: i64) -> Result<Self, DomainError> {
        match days {
            7 => Ok(Self::Days7),
            30 => Ok(Self::Days30),
            120 => Ok(Self::Days120),
            other => Err(DomainError::Period(other.to_string())),
        }
    }

    #[must_use]
    pub fn days(self) -> i16 {
        match self {
            Self::Days7 => 7,
            Self::Days30 => 30,
            Self::Days120 => 120,
        }
    }

    /// The smallest window that still covers `days_needed` days, or the largest one when none
    /// does (a gap longer than 120 days cannot be backfilled completely).
    #[must_use]
    pub fn smallest_covering(days_needed: i64) -> Self {
        Self::ALL
            .into_iter()
            .find(|p| i64::from(p.days()) >= days_needed)
            .unwrap_or(Self::Days120)
    }
}

impl FromStr for Period {
    type Err = DomainError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let days: i64 = s
            .trim()
            .parse()
            .map_err(|_| DomainError::Period(s.to_owned()))?;
        Self::from_days(days)
    }
}

impl FromStr for ClipId {
    type Err = DomainError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl FromStr for Region {
    type Err = DomainError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

// `pad`, not `write_str`, so tables can align these with `{:<20}`.
impl fmt::Display for ClipId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&self.0)
    }
}

impl fmt::Display for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&self.0)
    }
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.days(), f)
    }
}

/// JSON output (`watch list --json`, `status --json`) shows ids as strings and a period in days.
impl serde::Serialize for ClipId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl serde::Serialize for Region {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl serde::Serialize for Period {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_i16(self.days())
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DomainError {
    #[error("invalid clip id {0:?}: expected 1 to 32 decimal digits")]
    ClipId(String),
    #[error("invalid region {0:?}: expected an ISO 3166-1 alpha-2 code such as US or GB")]
    Region(String),
    #[error("invalid period {0:?}: expected 7, 30 or 120 (days)")]
    Period(String),
}

/// ISO 3166-1 alpha-2, the same list as the `watchlist_region_iso3166_alpha2_upper_case` CHECK.
pub const ISO_3166_ALPHA2: [&str; 249] = [
    "AD", "AE", "AF", "AG", "AI", "AL", "AM", "AO", "AQ", "AR", "AS", "AT", "AU", "AW", "AX", "AZ",
    "BA", "BB", "BD", "BE", "BF", "BG", "BH", "BI", "BJ", "BL", "BM", "BN", "BO", "BQ", "BR", "BS",
    "BT", "BV", "BW", "BY", "BZ", "CA", "CC", "CD", "CF", "CG", "CH", "CI", "CK", "CL", "CM", "CN",
    "CO", "CR", "CU", "CV", "CW", "CX", "CY", "CZ", "DE", "DJ", "DK", "DM", "DO", "DZ", "EC", "EE",
    "EG", "EH", "ER", "ES", "ET", "FI", "FJ", "FK", "FM", "FO", "FR", "GA", "GB", "GD", "GE", "GF",
    "GG", "GH", "GI", "GL", "GM", "GN", "GP", "GQ", "GR", "GS", "GT", "GU", "GW", "GY", "HK", "HM",
    "HN", "HR", "HT", "HU", "ID", "IE", "IL", "IM", "IN", "IO", "IQ", "IR", "IS", "IT", "JE", "JM",
    "JO", "JP", "KE", "KG", "KH", "KI", "KM", "KN", "KP", "KR", "KW", "KY", "KZ", "LA", "LB", "LC",
    "LI", "LK", "LR", "LS", "LT", "LU", "LV", "LY", "MA", "MC", "MD", "ME", "MF", "MG", "MH", "MK",
    "ML", "MM", "MN", "MO", "MP", "MQ", "MR", "MS", "MT", "MU", "MV", "MW", "MX", "MY", "MZ", "NA",
    "NC", "NE", "NF", "NG", "NI", "NL", "NO", "NP", "NR", "NU", "NZ", "OM", "PA", "PE", "PF", "PG",
    "PH", "PK", "PL", "PM", "PN", "PR", "PS", "PT", "PW", "PY", "QA", "RE", "RO", "RS", "RU", "RW",
    "SA", "SB", "SC", "SD", "SE", "SG", "SH", "SI", "SJ", "SK", "SL", "SM", "SN", "SO", "SR", "SS",
    "ST", "SV", "SX", "SY", "SZ", "TC", "TD", "TF", "TG", "TH", "TJ", "TK", "TL", "TM", "TN", "TO",
    "TR", "TT", "TV", "TW", "TZ", "UA", "UG", "UM", "US", "UY", "UZ", "VA", "VC", "VE", "VG", "VI",
    "VN", "VU", "WF", "WS", "YE", "YT", "ZA", "ZM", "ZW",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clip_ids_are_digits_only() {
        assert_eq!(
            ClipId::parse(" 6703723351497508865 ").unwrap().as_str(),
            "6703723351497508865"
        );
        assert!(ClipId::parse("").is_err());
        assert!(ClipId::parse("12a4").is_err());
        assert!(ClipId::parse("-1").is_err());
        assert!(ClipId::parse(&"9".repeat(33)).is_err());
    }

    #[test]
    fn lower_case_regions_are_accepted_upper_cased() {
        assert_eq!(Region::parse("us").unwrap().as_str(), "US");
        assert!(Region::parse("XX").is_err());
        assert!(Region::parse("USA").is_err());
    }

    #[test]
    fn the_smallest_covering_window_is_chosen() {
        assert_eq!(Period::smallest_covering(1), Period::Days7);
        assert_eq!(Period::smallest_covering(7), Period::Days7);
        assert_eq!(Period::smallest_covering(8), Period::Days30);
        assert_eq!(Period::smallest_covering(31), Period::Days120);
        assert_eq!(Period::smallest_covering(400), Period::Days120);
        assert!("14".parse::<Period>().is_err());
    }
}
