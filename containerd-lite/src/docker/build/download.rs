//! ADD's URL sources: each is fetched (plain HTTP or HTTPS) into a
//! private directory for the step, named after the URL's last path
//! segment, with mode 0600 and the server's `Last-Modified` time, as
//! dockerd does; a download is copied as a file, never unpacked.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use tokio::io::AsyncWriteExt;

use super::copy::Source;
use crate::{Error, Result};

/// How long a download may take to connect.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// The files a step downloaded; removed from disk when dropped.
#[derive(Debug)]
pub struct Downloads {
    _dir: tempfile::TempDir,
    pub sources: Vec<Source>,
}

/// Downloads `urls` into a new directory under `scratch`; `None` when
/// there are none.
pub async fn fetch(urls: &[String], scratch: &Path) -> Result<Option<Downloads>> {
    if urls.is_empty() {
        return Ok(None);
    }
    let scratch = scratch.to_path_buf();
    let dir = tokio::task::spawn_blocking(move || {
        std::fs::create_dir_all(&scratch)
            .and_then(|()| tempfile::Builder::new().prefix("add-").tempdir_in(&scratch))
            .map_err(|err| Error::internal(format!("a directory for ADD's downloads: {err}")))
    })
    .await
    .map_err(|err| Error::internal(format!("download dir task: {err}")))??;
    let client = reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .build()
        .map_err(|err| Error::internal(format!("an HTTP client: {err}")))?;
    let mut sources = Vec::new();
    for (index, url) in urls.iter().enumerate() {
        let name = file_name(url)?;
        let subdir = dir.path().join(index.to_string());
        tokio::fs::create_dir(&subdir)
            .await
            .map_err(|err| Error::internal(format!("a download dir: {err}")))?;
        let path = subdir.join(&name);
        download(&client, url, &path).await?;
        sources.push(Source {
            relative: name,
            path,
            remote: true,
        });
    }
    Ok(Some(Downloads { _dir: dir, sources }))
}

/// The file name a URL's content is saved under: its last path segment.
fn file_name(url: &str) -> Result<String> {
    let parsed = reqwest::Url::parse(url)
        .map_err(|err| Error::invalid(format!("ADD {url}: not a valid URL: {err}")))?;
    parsed
        .path_segments()
        .and_then(|mut segments| segments.next_back())
        .filter(|name| !name.is_empty() && *name != "." && *name != "..")
        .map(|name| {
            percent_encoding::percent_decode_str(name)
                .decode_utf8_lossy()
                .replace('/', "_")
        })
        .ok_or_else(|| {
            Error::invalid(format!(
                "ADD {url}: cannot determine a filename from the URL; give the destination a file name"
            ))
        })
}

/// Fetches `url` into `path`.
async fn download(client: &reqwest::Client, url: &str, path: &Path) -> Result<()> {
    let failed =
        |err: &dyn std::fmt::Display| Error::unavailable(format!("failed to GET {url}: {err}"));
    let mut response = client.get(url).send().await.map_err(|err| failed(&err))?;
    let status = response.status();
    if !status.is_success() {
        return Err(Error::unavailable(format!(
            "failed to GET {url} with status {status}"
        )));
    }
    let modified = response
        .headers()
        .get(reqwest::header::LAST_MODIFIED)
        .and_then(|v| v.to_str().ok())
        .and_then(httpdate);
    let mut file = tokio::fs::File::create(path)
        .await
        .map_err(|err| Error::internal(format!("saving {url}: {err}")))?;
    while let Some(chunk) = response.chunk().await.map_err(|err| failed(&err))? {
        file.write_all(&chunk)
            .await
            .map_err(|err| Error::internal(format!("saving {url}: {err}")))?;
    }
    file.flush()
        .await
        .map_err(|err| Error::internal(format!("saving {url}: {err}")))?;
    let file = file.into_std().await;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(|err| Error::internal(format!("saving {url}: {err}")))?;
    if let Some(modified) = modified {
        let _ = file.set_modified(modified);
    }
    Ok(())
}

/// An HTTP date (`Wed, 21 Oct 2015 07:28:00 GMT`).
fn httpdate(text: &str) -> Option<std::time::SystemTime> {
    let format = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    time::PrimitiveDateTime::parse(text, format)
        .ok()
        .map(|t| t.assume_utc().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_from_the_last_path_segment() {
        assert_eq!(
            file_name("http://h/a/b/file.tar.gz?x=1").unwrap(),
            "file.tar.gz"
        );
        assert_eq!(file_name("https://h/a/my%20file").unwrap(), "my file");
        assert!(file_name("http://h/").is_err());
        assert!(file_name("http://h/dir/").is_err());
    }

    #[test]
    fn http_dates_parse() {
        let t = httpdate("Wed, 21 Oct 2015 07:28:00 GMT").unwrap();
        let secs = t.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        assert_eq!(secs, 1_445_412_480);
        assert!(httpdate("yesterday").is_none());
    }
}
