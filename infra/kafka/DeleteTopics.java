// Deletes every topic whose name starts with a prefix, through the Admin API,
// for `scripts/kafka delete-topics` (the Kafka jars scripts/kafka fetches hold
// no kafka-topics.sh: that is kafka-tools). scripts/latency-run deletes its
// namespace after each run with it: every run creates some 18 topics of 8
// partitions, and a broker holding thousands of partitions from earlier runs
// measures slower (docs/PERFORMANCE.md), so repeated figures would drift.
// An empty prefix is refused: it would delete the whole cluster's topics.
//
// usage: java -cp 'libs/*:probe' DeleteTopics <bootstrap> <prefix> [admin client.properties]
import java.io.FileReader;
import java.io.Reader;
import java.util.List;
import java.util.Properties;
import java.util.concurrent.TimeUnit;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;

public final class DeleteTopics {
    public static void main(String[] args) throws Exception {
        if (args.length < 2 || args.length > 3 || args[1].isEmpty()) {
            System.err.println("usage: DeleteTopics <bootstrap> <non-empty prefix> [admin client.properties]");
            System.exit(2);
        }
        Properties props = new Properties();
        if (args.length == 3) {
            try (Reader in = new FileReader(args[2])) {
                props.load(in);
            }
        }
        props.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, args[0]);
        try (Admin admin = Admin.create(props)) {
            List<String> doomed = admin.listTopics().names().get(30, TimeUnit.SECONDS).stream()
                    .filter(name -> name.startsWith(args[1]))
                    .sorted()
                    .toList();
            if (!doomed.isEmpty()) {
                admin.deleteTopics(doomed).all().get(60, TimeUnit.SECONDS);
            }
            System.out.println(doomed.size() + " topic(s) deleted");
        }
    }
}
