//! Values to and from PostgreSQL's binary format: a parameter takes the type the server infers for it (an integer
//! bound where a `boolean` or `double precision` is wanted is converted), and a column of any type selfmon's schema
//! uses reads as one of the five kinds of [`ValueRef`]. Statements are written with SQLite's `?1` parameters and
//! given to PostgreSQL as `$1`.

use std::error::Error;

use bytes::{BufMut, BytesMut};
use tokio_postgres::types::{FromSql, IsNull, ToSql, Type, to_sql_checked};

use crate::storage::sql::ValueRef;

type Failure = Box<dyn Error + Sync + Send>;

impl ToSql for ValueRef<'_> {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, Failure> {
        match *self {
            Self::Null => Ok(IsNull::Yes),
            Self::Integer(i) => match *ty {
                Type::INT8 => i.to_sql(ty, out),
                Type::INT4 => i32::try_from(i)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(i)?.to_sql(ty, out),
                Type::BOOL => (i != 0).to_sql(ty, out),
                Type::FLOAT8 => (i as f64).to_sql(ty, out),
                Type::FLOAT4 => (i as f32).to_sql(ty, out),
                _ => text(&i.to_string(), ty, out),
            },
            Self::Real(r) => match *ty {
                Type::FLOAT8 => r.to_sql(ty, out),
                Type::FLOAT4 => (r as f32).to_sql(ty, out),
                _ => text(&r.to_string(), ty, out),
            },
            Self::Text(t) => text(t, ty, out),
            Self::Blob(b) if *ty == Type::BYTEA => b.to_sql(ty, out),
            Self::Blob(_) => Err(format!("a blob cannot be bound where {ty} is wanted").into()),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

/// Text where the server wants text (or JSON, whose binary form is its text). PostgreSQL's text cannot hold a NUL
/// character, which SQLite's can (a garbage line's bytes): it is stored as U+FFFD, the character for what cannot be
/// shown.
fn text(value: &str, ty: &Type, out: &mut BytesMut) -> Result<IsNull, Failure> {
    if value.contains('\0') {
        return text(&value.replace('\0', "\u{fffd}"), ty, out);
    }
    match *ty {
        Type::JSONB => {
            out.put_u8(1);
            out.put_slice(value.as_bytes());
            Ok(IsNull::No)
        }
        Type::JSON => {
            out.put_slice(value.as_bytes());
            Ok(IsNull::No)
        }
        _ if <&str as ToSql>::accepts(ty) => value.to_sql(ty, out),
        _ => Err(format!("text cannot be bound where {ty} is wanted").into()),
    }
}

/// A column's value, read as one of the five kinds.
pub struct Read<'a>(pub ValueRef<'a>);

impl<'a> FromSql<'a> for Read<'a> {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Self, Failure> {
        Ok(Self(match *ty {
            Type::BOOL => ValueRef::Integer(i64::from(bool::from_sql(ty, raw)?)),
            Type::INT2 => ValueRef::Integer(i16::from_sql(ty, raw)?.into()),
            Type::INT4 => ValueRef::Integer(i32::from_sql(ty, raw)?.into()),
            Type::INT8 => ValueRef::Integer(i64::from_sql(ty, raw)?),
            Type::OID => ValueRef::Integer(u32::from_sql(ty, raw)?.into()),
            Type::FLOAT4 => ValueRef::Real(f32::from_sql(ty, raw)?.into()),
            Type::FLOAT8 => ValueRef::Real(f64::from_sql(ty, raw)?),
            Type::NUMERIC => numeric(raw)?,
            Type::BYTEA => ValueRef::Blob(raw),
            Type::JSON => ValueRef::Text(std::str::from_utf8(raw)?),
            Type::JSONB => ValueRef::Text(std::str::from_utf8(raw.get(1..).unwrap_or_default())?),
            _ if <&str as FromSql>::accepts(ty) => ValueRef::Text(<&str>::from_sql(ty, raw)?),
            _ => return Err(format!("a column of type {ty} cannot be read").into()),
        }))
    }

    fn from_sql_null(_: &Type) -> Result<Self, Failure> {
        Ok(Self(ValueRef::Null))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

/// A `numeric` (what PostgreSQL's `sum` and `avg` of integers give): an integer when it has no fraction and fits,
/// else the nearest double. Its binary form: digit count, weight, sign and scale (16 bits each), then base-10000
/// digits, the first of them worth 10000^weight.
fn numeric(raw: &[u8]) -> Result<ValueRef<'static>, Failure> {
    let word = |at: usize| -> Result<u16, Failure> {
        raw.get(at..at + 2).map(|b| u16::from_be_bytes([b[0], b[1]])).ok_or_else(|| "a numeric cut short".into())
    };
    let digits = usize::from(word(0)?);
    let weight = i32::from(word(2)?.cast_signed());
    let (sign, scale) = (word(4)?, word(6)?);
    match sign {
        0x0000 | 0x4000 => {}
        0xC000 => return Ok(ValueRef::Real(f64::NAN)),
        0xD000 => return Ok(ValueRef::Real(f64::INFINITY)),
        0xF000 => return Ok(ValueRef::Real(f64::NEG_INFINITY)),
        other => return Err(format!("a numeric with sign {other:#x}").into()),
    }
    let negative = sign == 0x4000;
    let mut real = 0.0;
    let mut whole: Option<i128> = Some(0);
    for i in 0..digits {
        let digit = word(8 + 2 * i)?;
        let power = weight - i32::try_from(i)?;
        real += f64::from(digit) * 10_000f64.powi(power);
        whole = match (whole, u32::try_from(power)) {
            (Some(sum), Ok(power)) => {
                10_000i128.checked_pow(power).and_then(|p| sum.checked_add(i128::from(digit) * p))
            }
            // A digit below the point that is not zero: not whole.
            (Some(sum), Err(_)) if digit == 0 => Some(sum),
            _ => None,
        };
    }
    let whole = whole.filter(|_| scale == 0).map(|w| if negative { -w } else { w });
    Ok(match whole.and_then(|w| i64::try_from(w).ok()) {
        Some(integer) => ValueRef::Integer(integer),
        None => ValueRef::Real(if negative { -real } else { real }),
    })
}

/// A statement with SQLite's numbered parameters (`?1`) as PostgreSQL takes them (`$1`); quoted text and names
/// are left as they are.
pub fn numbered(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut quote = None;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (None, '\'' | '"') => quote = Some(c),
            (Some(q), _) if c == q => quote = None,
            (None, '?') if chars.peek().is_some_and(char::is_ascii_digit) => {
                out.push('$');
                continue;
            }
            _ => {}
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbered_parameters_become_dollars_outside_quotes() {
        assert_eq!(
            numbered("SELECT '?1', \"a?2\" FROM t WHERE x = ?1 AND y IN (?2, ?10) AND z = 'it''s ?3'"),
            "SELECT '?1', \"a?2\" FROM t WHERE x = $1 AND y IN ($2, $10) AND z = 'it''s ?3'"
        );
    }

    /// The binary form of a numeric: digits in base 10000 from a weight, a sign and a display scale.
    fn encoded(digits: &[u16], weight: i16, negative: bool, scale: u16) -> Vec<u8> {
        let mut raw = Vec::new();
        for word in
            [u16::try_from(digits.len()).unwrap(), weight.cast_unsigned(), if negative { 0x4000 } else { 0 }, scale]
        {
            raw.extend(word.to_be_bytes());
        }
        for digit in digits {
            raw.extend(digit.to_be_bytes());
        }
        raw
    }

    #[test]
    fn numerics_read_as_integers_when_whole_and_as_doubles_otherwise() {
        // 123456789 = 1|2345|6789 in base 10000.
        assert_eq!(numeric(&encoded(&[1, 2345, 6789], 2, false, 0)).unwrap(), ValueRef::Integer(123_456_789));
        assert_eq!(numeric(&encoded(&[42], 0, true, 0)).unwrap(), ValueRef::Integer(-42));
        assert_eq!(numeric(&encoded(&[], 0, false, 0)).unwrap(), ValueRef::Integer(0));
        // 12.5 = 12|5000 with weight 0, shown with one decimal.
        assert_eq!(numeric(&encoded(&[12, 5000], 0, false, 1)).unwrap(), ValueRef::Real(12.5));
        // 20000 = 2 with weight 1 (trailing zero digits are left out).
        assert_eq!(numeric(&encoded(&[2], 1, false, 0)).unwrap(), ValueRef::Integer(20_000));
        // Past i64: a double.
        let huge = numeric(&encoded(&[1, 0, 0, 0, 0, 0], 5, false, 0)).unwrap();
        assert_eq!(huge, ValueRef::Real(1e20));
        assert!(numeric(&[0, 1]).is_err());
    }
}
