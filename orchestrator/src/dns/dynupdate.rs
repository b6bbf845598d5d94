//! Update-only dynamic DNS services. They have no API to read a record, so reads go to the
//! authoritative servers; they can only keep a node's own name (never a site's records).
//!
//! - DuckDNS: `GET /update?domains=NAME&token=T&ip=V4` (or `ipv6=`, `txt=`), answered `OK`
//!   or `KO`. The token travels in the query string, so no URL ever reaches a message.
//!   Docs: <https://www.duckdns.org/spec.jsp>.
//! - dyndns2 (DynDNS, No-IP and many others): `GET /nic/update?hostname=H&myip=IP` with
//!   HTTP basic authentication, answered `good IP`, `nochg IP`, or an error word.
//!   Docs: <https://help.dyn.com/remote-access-api/perform-update/>.

use super::http::{read_secret, Api};
use super::{DnsError, Kind};
use crate::config::DnsProvider;
use reqwest::Method;

pub const DUCKDNS_API: &str = "https://www.duckdns.org";

pub struct DuckDns {
    api: Api,
    token: String,
}

impl DuckDns {
    pub fn new(p: &DnsProvider) -> Result<DuckDns, DnsError> {
        Ok(DuckDns {
            api: Api::new("DuckDNS", p.api_url.as_deref(), DUCKDNS_API)?,
            token: read_secret(&p.name, "token_file", p.token_file.as_deref())?,
        })
    }

    pub async fn write(&self, name: &str, kind: Kind, values: &[String]) -> Result<(), DnsError> {
        let domain = name
            .trim_end_matches('.')
            .to_ascii_lowercase()
            .strip_suffix(".duckdns.org")
            .filter(|d| !d.is_empty() && !d.contains('.'))
            .map(str::to_owned)
            .ok_or_else(|| {
                self.api
                    .error(format!("{name} is not a DuckDNS name (NAME.duckdns.org)"))
            })?;
        let [value] = values else {
            return Err(self.api.error(format!(
                "DuckDNS holds exactly one {kind} value per name, not {}",
                values.len()
            )));
        };
        // An empty `ip` would mean "use the address this request comes from".
        if value.is_empty() {
            return Err(self.api.error("refusing to send an empty value".into()));
        }
        let mut url = self.api.url("/update")?;
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("domains", &domain)
                .append_pair("token", &self.token);
            match kind {
                Kind::A => q.append_pair("ip", value),
                Kind::Aaaa => q.append_pair("ipv6", value),
                Kind::Txt => q.append_pair("txt", value),
            };
        }
        let (status, text) = self.api.send(self.api.request(Method::GET, url)).await?;
        match text.lines().next().map(str::trim) {
            Some("OK") if status.is_success() => Ok(()),
            Some("KO") => Err(self.api.error(format!(
                "the update of {name} was refused (KO): check token_file, and that {domain} belongs to that token's account"
            ))),
            _ => Err(self.api.unexpected(status, &text)),
        }
    }
}

pub struct Dyndns2 {
    api: Api,
    username: String,
    password: String,
}

impl Dyndns2 {
    pub fn new(p: &DnsProvider) -> Result<Dyndns2, DnsError> {
        let server = p
            .server
            .as_deref()
            .ok_or_else(|| DnsError::Config(format!("dns.{}: `server` is required", p.name)))?;
        Ok(Dyndns2 {
            api: Api::new("dyndns2", None, &crate::config::dyndns2_url(server))?,
            username: p.username.clone().ok_or_else(|| {
                DnsError::Config(format!("dns.{}: `username` is required", p.name))
            })?,
            password: read_secret(&p.name, "password_file", p.password_file.as_deref())?,
        })
    }

    pub async fn write(&self, name: &str, kind: Kind, values: &[String]) -> Result<(), DnsError> {
        if kind == Kind::Txt {
            return Err(self.api.error("dyndns2 cannot set TXT records".into()));
        }
        if values.is_empty() {
            return Err(self
                .api
                .error(format!("dyndns2 cannot delete the {kind} record of {name}")));
        }
        let mut url = self.api.url("/nic/update")?;
        url.query_pairs_mut()
            .append_pair("hostname", name.trim_end_matches('.'))
            .append_pair("myip", &values.join(","));
        let request = self
            .api
            .request(Method::GET, url)
            .basic_auth(&self.username, Some(&self.password));
        let (status, text) = self.api.send(request).await?;
        let answer = text.trim();
        let word = answer.split_whitespace().next().unwrap_or_default();
        let problem = match word {
            "good" | "nochg" if status.is_success() => return Ok(()),
            "badauth" => format!(
                "badauth: the server refused user `{}` — check username and password_file",
                self.username
            ),
            "nohost" => format!("nohost: {name} does not exist in this account"),
            "notfqdn" => format!("notfqdn: {name} is not a full domain name"),
            "!donator" => "!donator: this feature needs a paid account".to_owned(),
            "abuse" => "abuse: the server blocked updates of this name for abuse".to_owned(),
            "badagent" => "badagent: the server refused orch's user agent".to_owned(),
            "numhost" => "numhost: too many names in one update".to_owned(),
            "dnserr" | "911" => format!("{word}: a problem on the server's side; retry later"),
            _ => return Err(self.api.unexpected(status, answer)),
        };
        Err(self.api.error(problem))
    }
}
