#![allow(dead_code)] // each test file uses a part

pub mod clients;
pub mod poller;
pub mod scrape;
pub mod status;
