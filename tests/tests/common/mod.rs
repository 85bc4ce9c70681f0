pub mod poller;
