//! How the domain's parsed types travel through Postgres, so rows come out of the store already
//! typed: `ClipId` and `Region` as `text`, `Period` as `int2` (days), `ProviderKind` as `text`.
//! Decoding parses, so a value the database holds but the domain refuses is a decode error naming
//! the value, never a panic (the tables' CHECK constraints refuse such values in the first place).

use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::postgres::{PgArgumentBuffer, PgTypeInfo, PgValueRef};
use sqlx::{Decode, Encode, Postgres, Type};

use crate::domain::{ClipId, Period, Region};
use crate::provider::ProviderKind;

/// `text` in Postgres, parsed by `FromStr` on the way out.
macro_rules! text_type {
    ($t:ty) => {
        impl Type<Postgres> for $t {
            fn type_info() -> PgTypeInfo {
                <&str as Type<Postgres>>::type_info()
            }
            fn compatible(ty: &PgTypeInfo) -> bool {
                <&str as Type<Postgres>>::compatible(ty)
            }
        }

        impl Encode<'_, Postgres> for $t {
            fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
                <&str as Encode<Postgres>>::encode(self.as_str(), buf)
            }
        }

        impl<'r> Decode<'r, Postgres> for $t {
            fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
                Ok(<&str as Decode<Postgres>>::decode(value)?.parse::<$t>()?)
            }
        }
    };
}

text_type!(ClipId);
text_type!(Region);
text_type!(ProviderKind);

impl Type<Postgres> for Period {
    fn type_info() -> PgTypeInfo {
        <i16 as Type<Postgres>>::type_info()
    }
}

impl Encode<'_, Postgres> for Period {
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        <i16 as Encode<Postgres>>::encode(self.days(), buf)
    }
}

impl<'r> Decode<'r, Postgres> for Period {
    fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
        Ok(Period::from_days(
            <i16 as Decode<Postgres>>::decode(value)?.into(),
        )?)
    }
}
