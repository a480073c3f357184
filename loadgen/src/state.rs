//! Reading the stages' state as an operator would: every account's balance
//! (`GET /v1/accounts/{id}`) and every instrument's stock
//! (`GET /v1/instruments/{sku}`) through the Order API (REST) of the running
//! engines, into a [`StateSnapshot`] the audit compares key by key with what
//! the events imply ([`audit::Audit::finish_with_state`]).
//!
//! Owns: the plain HTTP/1.1 GETs, which engine answers for a key (200 from
//! its owner, 404 when the owner never saw it; 421 and 503 are retried on the
//! next engine or a little later), and the keys of a synthetic scenario.
//! Must never: know an engine or a stage type (it reads JSON), or decide
//! what a value should be (that is the audit's).

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use codecs::{AccountId, Money, Quantity, Sku, ValueError};

use crate::synth::{instrument_sku, SynthConfig};
use audit::StateSnapshot;

/// How long one HTTP exchange may take.
const HTTP_TIMEOUT_MS: u64 = 10_000;
/// Pause between rounds over the engines while no engine answers for a key.
const RETRY_PAUSE_MS: u64 = 200;

/// Why the state could not be read.
#[derive(Debug, thiserror::Error)]
pub enum StateReadError {
    #[error("GET {path} from {addr}: {source}")]
    Http {
        addr: String,
        path: String,
        source: std::io::Error,
    },
    #[error("GET {path} from {addr}: {reason}")]
    Answer {
        addr: String,
        path: String,
        reason: String,
    },
    #[error("GET {path} answered by no engine within {wait:?}: {answers}")]
    NoOwner {
        path: String,
        wait: Duration,
        answers: String,
    },
    #[error(transparent)]
    Value(#[from] ValueError),
}

/// One HTTP/1.1 GET: the status and the body.
pub fn http_get(addr: &str, path: &str) -> Result<(u16, String), StateReadError> {
    let io = |source| StateReadError::Http {
        addr: addr.to_string(),
        path: path.to_string(),
        source,
    };
    let mut stream = TcpStream::connect(addr).map_err(io)?;
    let timeout = Some(Duration::from_millis(HTTP_TIMEOUT_MS));
    stream.set_read_timeout(timeout).map_err(io)?;
    stream.set_write_timeout(timeout).map_err(io)?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(io)?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).map_err(io)?;
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| StateReadError::Answer {
            addr: addr.to_string(),
            path: path.to_string(),
            reason: format!("no HTTP status in {answer:?}"),
        })?;
    let body = answer
        .split_once("\r\n\r\n")
        .map_or("", |(_, body)| body)
        .to_string();
    Ok((status, body))
}

/// One value of the JSON object at `path`, from the engine that owns it:
/// `None` when its owner never saw the key (404).
pub fn read_value(
    addrs: &[String],
    path: &str,
    field: &str,
    wait: Duration,
) -> Result<Option<i64>, StateReadError> {
    let deadline = Instant::now() + wait;
    loop {
        let mut answers = Vec::new();
        for addr in addrs {
            let (status, body) = http_get(addr, path)?;
            match status {
                200 => {
                    let json: serde_json::Value =
                        serde_json::from_str(&body).map_err(|e| StateReadError::Answer {
                            addr: addr.clone(),
                            path: path.to_string(),
                            reason: format!("{e} in {body}"),
                        })?;
                    return json[field]
                        .as_i64()
                        .map(Some)
                        .ok_or_else(|| StateReadError::Answer {
                            addr: addr.clone(),
                            path: path.to_string(),
                            reason: format!("no integer {field} in {body}"),
                        });
                }
                404 => return Ok(None),
                _ => answers.push(format!("{addr}: {status} {}", body.trim())),
            }
        }
        if Instant::now() >= deadline {
            return Err(StateReadError::NoOwner {
                path: path.to_string(),
                wait,
                answers: answers.join("; "),
            });
        }
        std::thread::sleep(Duration::from_millis(RETRY_PAUSE_MS));
    }
}

/// The balances of `accounts` and the stock of `skus`, read through the
/// Order APIs at `addrs` (host:port); a key no owner ever saw is absent (the
/// audit compares it as zero). Both maps are present even when empty.
pub fn read_state(
    addrs: &[String],
    accounts: &[AccountId],
    skus: &[Sku],
    wait: Duration,
) -> Result<StateSnapshot, StateReadError> {
    let mut state = StateSnapshot::default();
    state.balances_mut();
    state.on_hand_mut();
    for account in accounts {
        let path = format!("/v1/accounts/{}", account.0);
        if let Some(balance) = read_value(addrs, &path, "balance", wait)? {
            state.balances_mut().insert(*account, Money(balance));
        }
    }
    for sku in skus {
        let path = format!("/v1/instruments/{}", sku.as_str());
        if let Some(units) = read_value(addrs, &path, "on_hand", wait)? {
            state.on_hand_mut().insert(*sku, Quantity(units));
        }
    }
    Ok(state)
}

/// Every account and instrument a synthetic scenario funds and stocks.
pub fn scenario_keys(config: &SynthConfig) -> Result<(Vec<AccountId>, Vec<Sku>), StateReadError> {
    let accounts = (1..=config.accounts)
        .map(|rank| AccountId(config.account_base + rank))
        .collect();
    let skus = (1..=config.instruments)
        .map(|n| instrument_sku(n, config.instruments))
        .collect::<Result<_, _>>()?;
    Ok((accounts, skus))
}
