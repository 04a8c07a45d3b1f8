//! Bounds on what a request may carry, beyond the gRPC message size
//! (`server.max_message_size`): keys, lists, scan pages. A request over a bound is refused with
//! INVALID_ARGUMENT naming the field and the limit, before anything is read or changed.

use tonic::Status;

/// Largest key accepted anywhere (writes through storage-admin, reads, scan bounds).
pub const MAX_KEY_BYTES: usize = 64 * 1024;
/// Largest value storage-admin writes.
pub const MAX_VALUE_BYTES: usize = 16 * 1024 * 1024;
/// Most entries one replayer Scan page may ask for.
pub const MAX_SCAN_PAGE: u32 = 10_000;

/// Most entries of a list in one request (files of a task result, consumed inputs).
pub const MAX_LIST_LEN: usize = 10_000;

/// A list has at most `max` entries.
pub fn check_list(field: &str, len: usize, max: usize) -> Result<(), Status> {
    if len > max {
        return Err(Status::invalid_argument(format!(
            "{field}: {len} entries exceed the list size limit of {max}"
        )));
    }
    Ok(())
}

/// `field` is at most [`MAX_KEY_BYTES`] long.
pub fn check_key(field: &str, key: &[u8]) -> Result<(), Status> {
    if key.len() > MAX_KEY_BYTES {
        return Err(Status::invalid_argument(format!(
            "{field}: {} bytes exceeds the key size limit of {MAX_KEY_BYTES} bytes",
            key.len()
        )));
    }
    Ok(())
}

/// A page size is at most `max`.
pub fn check_page(field: &str, n: u32, max: u32) -> Result<(), Status> {
    if n > max {
        return Err(Status::invalid_argument(format!(
            "{field}: {n} exceeds the page size limit of {max}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_name_the_limit() {
        assert!(check_key("key", &[0; MAX_KEY_BYTES]).is_ok());
        let e = check_key("key", &[0; MAX_KEY_BYTES + 1]).expect_err("too long");
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(
            e.message().contains("key size limit of 65536"),
            "{}",
            e.message()
        );
        let e = check_list("files", MAX_LIST_LEN + 1, MAX_LIST_LEN).expect_err("too long");
        assert!(
            e.message().contains("list size limit of 10000"),
            "{}",
            e.message()
        );
        let e = check_page("limit", MAX_SCAN_PAGE + 1, MAX_SCAN_PAGE).expect_err("too big");
        assert!(
            e.message().contains("page size limit of 10000"),
            "{}",
            e.message()
        );
    }
}
