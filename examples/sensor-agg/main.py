"""Entry point of the sensor-agg example; the work happens in the precompiled ``sensoragg``
package (the main script is the one module Python always compiles at start)."""

import sys

from sensoragg.service import main

sys.exit(main())
